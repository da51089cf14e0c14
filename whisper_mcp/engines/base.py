"""What every engine shares: the result records, a batch item, the choices.

Both backends (``openai``, ``ctranslate2``) and the server depend on this
module; it depends on neither, so no engine imports another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ENGINES = ("openai", "ctranslate2")
# Every compute_type a setting may name; each engine accepts a subset.
COMPUTE_TYPES = ("default", "int8", "int8_float32", "int8_float16", "float32", "float16", "bfloat16")
# Jobs up to this long are one 30 s decoding window, the part a batch decodes.
BATCH_MAX_SECONDS = 30.0

ProgressCallback = Callable[[float], None]
# What a backend transcribes: an audio file (decoded by the backend, in a
# stream where it can) or float32 16 kHz mono samples.
AudioInput = Path | np.ndarray


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str | None
    duration: float
    segments: list[Segment] = field(default_factory=list)
    # Probability of the detected language, when it was detected.
    language_probability: float | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for segment in data["segments"]:
            if segment["words"] is None:
                del segment["words"]
        return data


@dataclass(frozen=True)
class BatchItem:
    """One job of a batch: its audio and where its progress goes."""

    audio: AudioInput
    duration_hint: float = 0.0
    on_progress: ProgressCallback | None = None


def make_segment(
    index: int, start: float, end: float, text: str, words: list[tuple[str, float, float, float]] | None
) -> Segment:
    """A Segment with the rounding every engine uses: times to ms, probabilities to 4 places."""
    return Segment(
        index,
        round(float(start), 3),
        round(float(end), 3),
        str(text).strip(),
        None
        if words is None
        else [Word(str(w), round(float(s), 3), round(float(e), 3), round(float(p), 4)) for w, s, e, p in words],
    )


class Engine(Protocol):
    """What the server asks of an engine (``engine.WhisperEngine``, or a fake in
    tests). Every method blocks; only the inference thread calls them, except
    the read-only attributes."""

    engine: str  # "openai" | "ctranslate2"
    compute_type: str  # resolved: never "default"
    device: str
    registry: Any  # models.registry.ModelRegistry: names -> ModelInfo
    pool: Any  # models.pool.ModelPool: what is loaded, loads, unloads, sweep()

    @property
    def loaded_models(self) -> list[str]: ...

    def load(self, info: Any) -> None: ...

    def transcribe_batch(self, items: Sequence[BatchItem], model: Any, options: Any) -> list[Transcription | Exception]:
        """One outcome per item: its transcription, or the exception that ended it."""

    def can_batch(self, duration: float, options: Any) -> bool:
        """Whether a job this long, with these options, may share a forward pass."""
