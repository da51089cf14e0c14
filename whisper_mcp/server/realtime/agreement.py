"""Text that never has to be taken back: the LocalAgreement-2 policy of
whisper_streaming (Macháček et al., 2023). The growing utterance is decoded
again and again; a word is sent once two decodes in a row agree on it and on
everything before it, and the later decode heard more after it: the earlier
decode's last word may be one its audio cut off (an "am" that was going to
be "amiable"), which the next decode, cut at the same place, can repeat.
The decode at the end of the utterance sends the rest.

Words are compared without case and without the punctuation around them
(a decode cut off mid-sentence often ends it with a full stop), and sent as
the later decode wrote them. The transcript is the words joined by single
spaces, and each delta is its words with the space that joins them to
what was sent before, so the deltas concatenate exactly to the transcript.
"""

from __future__ import annotations

import difflib
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
    _previous: list[Word] | None = None

    def hypothesis(self, words: Sequence[Word]) -> list[Word]:
        """A decode of the utterance so far: the words it and the one before
        agree on beyond those already sent (each is sent once)."""
        previous, self._previous = self._previous, list(words)
        if previous is None:
            return []
        agreed = 0
        for a, b in zip(previous[:-1], words, strict=False):  # never the earlier decode's last word
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
        after the last of them it also heard, and as many words as were sent
        after that ("service and should keep the model" sent, "services should
        keep the model loaded" decoded: "loaded")."""
        rest = list(words[_resume(self.sent, words) :])
        self.sent.extend(rest)
        self._previous = None
        return rest

    @property
    def transcript(self) -> str:
        return " ".join(w.text for w in self.sent)

    def delta(self, new: Sequence[Word]) -> str:
        """The text of ``new``, words the last call returned (already in ``sent``)."""
        text = " ".join(w.text for w in new)
        return " " + text if text and len(self.sent) > len(new) else text


# A word sent is matched in the last decode at most this many words away
# from its place, so that a common word far ahead is not taken for it.
MAX_DRIFT = 3


def _resume(sent: Sequence[Word], words: Sequence[Word]) -> int:
    """Where in ``words`` the text after ``sent`` begins: after the last run of
    words both have (near its place in ``sent``), and past as many more as
    ``sent`` has after that run."""
    matcher = difflib.SequenceMatcher(a=[_key(w) for w in sent], b=[_key(w) for w in words], autojunk=False)
    runs = [m for m in matcher.get_matching_blocks() if m.size and abs(m.a - m.b) <= MAX_DRIFT]
    if not runs:
        return len(sent)
    last = runs[-1]
    return last.b + last.size + len(sent) - (last.a + last.size)


def _key(word: Word) -> str:
    return word.text.strip(_PUNCTUATION).casefold()


def _same(a: Sequence[Word], b: Sequence[Word]) -> bool:
    return [_key(w) for w in a] == [_key(w) for w in b]


__all__ = ["LocalAgreement", "Word", "words_of"]
