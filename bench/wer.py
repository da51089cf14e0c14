"""Word error rate, scored the way openai-whisper's papers score it."""

from __future__ import annotations

# The committed English clips with reference texts (tests/fixtures): WER is counted over all of them.
WER_CLIPS = [("long.mp3", "long.txt"), ("speech.wav", "speech.txt"), ("short.wav", "short.txt")]


def normalise_words(text: str) -> list[str]:
    """openai-whisper's English normaliser (the one its papers score with:
    "fifteenth" and "15th", "one two three" and "1 2 3" compare equal), as words."""
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()(text).split()


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word-level Levenshtein distance, and the reference's length in words."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over (reference, hypothesis) pairs: all edits over all reference words."""
    counts = [edits(r, h) for r, h in pairs]
    words = sum(n for _, n in counts)
    return sum(e for e, _ in counts) / words if words else 0.0
