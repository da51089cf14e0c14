"""How many mel frames a decoding window is encoded with.

Whisper pads every window to 30 s (3000 frames) before its encoder, whose
attention grows with the square of that length: a 7 s clip costs what 30 s
of speech costs. CTranslate2's encoder takes shorter input, so a window with
less audio may be encoded at its own length plus some silence (``fitted``).
On tiny.en the bench's recordings score the same fitted or padded (47 word
errors in 698); 36 clips of 3.5-9.6 s of real speech (cut from bench/audio
and long.mp3 at pauses) made 63 errors fitted against 72 padded from float
samples, 76 against 71 from the same cuts as 16-bit WAV files: within what
one bit of rounding moves either way, with a fifth of the encoder's time.
With 0.3 s of silence instead of 2 s the decoder ran on and errors rose.
The silence is rounded up to whole steps, so a job's text does not depend
on the other jobs decoded beside it.

faster-whisper pads each window in its module's ``pad_or_trim``; the hook
there (compat.faster_whisper) asks ``window_frames`` for the length, which is
whatever ``fitting`` set for the calling thread (faster-whisper's default
outside it).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

FULL_FRAMES = 3000  # 30 s of 10 ms mel frames: Whisper's window
# At least this much silence after a fitted window's audio, in whole steps of STEP_FRAMES.
SILENCE_FRAMES = 200
STEP_FRAMES = 1000

_LOCAL = threading.local()


def fitted(frames: int) -> int:
    """The encoder's input length for a window holding ``frames`` frames of
    audio: those and at least 2 s of silence, rounded up to a 10 s step,
    at most a whole window."""
    steps = math.ceil((max(frames, 0) + SILENCE_FRAMES) / STEP_FRAMES)
    return min(FULL_FRAMES, steps * STEP_FRAMES)


@contextlib.contextmanager
def fitting(enabled: bool = True) -> Iterator[None]:
    """Windows padded on this thread inside the block are ``fitted`` (or, with
    ``enabled`` false, padded to 30 s as the library does)."""
    previous = getattr(_LOCAL, "enabled", False)
    _LOCAL.enabled = enabled
    try:
        yield
    finally:
        _LOCAL.enabled = previous


@contextlib.contextmanager
def padded() -> Iterator[None]:
    """Every window on this thread inside the block padded to 30 s, whatever
    ``fitting`` says within it: live transcription's utterances, whose
    accuracy was measured padded (fitted, a test's utterance lost words)."""
    previous = getattr(_LOCAL, "padded", False)
    _LOCAL.padded = True
    try:
        yield
    finally:
        _LOCAL.padded = previous


def window_frames(frames: int) -> int | None:
    """The length to pad a window of ``frames`` frames to on this thread; None: the library's own."""
    fit = getattr(_LOCAL, "enabled", False) and not getattr(_LOCAL, "padded", False)
    return fitted(frames) if fit else None


__all__ = ["FULL_FRAMES", "fitted", "fitting", "padded", "window_frames"]
