"""Text that never has to be taken back: the LocalAgreement-2 policy of
whisper_streaming (Macháček et al., 2023). The growing utterance is decoded
again and again; a word is sent once two decodes agree on it and on
everything before it, and the later decode heard more after it: the earlier
decode's last word may be one its audio cut off (an "am" that was going to
be "amiable"), which the next decode, cut at the same place, can repeat.
With a ``span``, the two are at least that much audio apart: two guesses a
moment apart, both cut just after "services", heard "service and" alike.
The decode at the end of the utterance sends the rest. A guess that repeats
itself is read only up to where the repetition starts (``_before_loop``).

Words are compared without case and without the punctuation around them
(a decode cut off mid-sentence often ends it with a full stop), and sent as
the later decode wrote them. The transcript is the words joined by single
spaces, and each delta is its words with the space that joins them to
what was sent before, so the deltas concatenate exactly to the transcript.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

_PUNCTUATION = string.punctuation + "¿¡«»“”‘’…"


@dataclass(frozen=True)
class Word:
    text: str
    logprob: float | None = None  # when the session asked for logprobs


def words_of(text: str) -> list[Word]:
    return [Word(w) for w in text.split()]


@dataclass
class LocalAgreement:
    sent: list[Word] = field(default_factory=list)
    # A guess is compared with the latest one that heard at least this much
    # less audio (in samples; 0: the one before it), so that the later guess
    # heard past the words both have by at least that much.
    span: int = 0
    _guesses: list[tuple[int, list[Word]]] = field(default_factory=list)  # (audio heard, words)

    def hypothesis(self, words: Sequence[Word], heard: int = 0) -> list[Word]:
        """A guess at the utterance so far (``heard`` samples of it): the
        words it and the earlier guess agree on beyond those already sent
        (each is sent once)."""
        words = list(_before_loop(words))
        earlier = [i for i, (n, _) in enumerate(self._guesses) if heard - n >= self.span]
        previous = self._guesses[earlier[-1]][1] if earlier else None
        self._guesses = [*self._guesses[earlier[-1] if earlier else 0 :], (heard, words)]
        if previous is None:
            return []
        agreed = 0
        for a, b in zip(previous[:-1], words, strict=False):  # never the earlier guess's last word
            if _key(a) != _key(b):
                break
            agreed += 1
        if agreed <= len(self.sent) or not _same(words[: len(self.sent)], self.sent):
            return []
        new = list(words[len(self.sent) : agreed])
        self.sent.extend(new)
        return new

    def final(self, words: Sequence[Word]) -> list[Word]:
        """The decode of the whole utterance: what is left to send. Where it
        disagrees with words already sent, those stand, and it continues
        after the part of it that matches them best ("service and should keep
        the model" sent, "services should keep the model loaded" decoded:
        "loaded")."""
        rest = list(words[_resume(self.sent, words) :])
        self.sent.extend(rest)
        self._guesses = []
        return rest

    @property
    def transcript(self) -> str:
        return " ".join(w.text for w in self.sent)

    def delta(self, new: Sequence[Word]) -> str:
        """The text of ``new``, words the last call returned (already in ``sent``)."""
        text = " ".join(w.text for w in new)
        return " " + text if text and len(self.sent) > len(new) else text


def _resume(sent: Sequence[Word], words: Sequence[Word]) -> int:
    """Where in ``words`` the text after ``sent`` begins: after the prefix of
    ``words`` that ``sent`` is fewest edits from (word by word); of those
    that tie, one that ends on the last word sent ("Mr." sent, "And Mr.
    John" decoded: "John" follows), then the one nearest ``sent`` in length
    ("the release of the" sent, "release on the new transcription" decoded:
    "new transcription" follows)."""
    a, b = [_key(w) for w in sent], [_key(w) for w in words]
    row = list(range(len(b) + 1))  # edits between a[:i] and b[:j], row by row
    for i in range(1, len(a) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(b) + 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1]))
    last = a[-1] if a else None
    return min(range(len(b) + 1), key=lambda j: (row[j], not j or b[j - 1] != last, abs(j - len(a)), j))


# A guess that stops mid-word can set the decoder repeating itself ("He was
# not. He was not."), and two such guesses may agree on the loop: a guess is
# read only up to the first phrase of at most this many words that comes
# twice in a row (a single word: three times, as "very, very" is speech).
LOOP_WORDS = 6


def _before_loop(words: Sequence[Word]) -> Sequence[Word]:
    keys = [_key(w) for w in words]
    for i in range(len(keys)):
        for n in range(1, LOOP_WORDS + 1):
            times = 3 if n == 1 else 2
            if i + times * n <= len(keys) and all(
                keys[i + k * n : i + (k + 1) * n] == keys[i : i + n] for k in range(1, times)
            ):
                return words[: i + n]
    return words


def _key(word: Word) -> str:
    return word.text.strip(_PUNCTUATION).casefold()


def _same(a: Sequence[Word], b: Sequence[Word]) -> bool:
    return [_key(w) for w in a] == [_key(w) for w in b]


__all__ = ["LocalAgreement", "Word", "words_of"]
