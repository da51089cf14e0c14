"""A fake engine for in-process tests of the service, the routes and the worker.

It decodes nothing: a job's "transcript" names its audio file and duration, so
tests can tell jobs apart. It can be held (``gate``) to keep jobs running, and
records the batches it was given and the options each call carried. Options
make it slower, split transcripts into segments with word timings, or report
a detected language. Model names resolve like the real registry's
for tiny.en and base; anything else is ``UnknownModel``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisper_mcp.engines.audio import SAMPLE_RATE
from whisper_mcp.engines.base import BATCH_MAX_SECONDS, BatchItem, Engine, Segment, Transcription, Word
from whisper_mcp.errors import UnknownModel
from whisper_mcp.models.pool import LoadedModel
from whisper_mcp.models.registry import ModelInfo
from whisper_mcp.options import TranscribeOptions


def _loaded(name: str) -> LoadedModel:
    now = time.time()
    return LoadedModel(name, 75 * 2**20, loaded_at=now, last_used=now, pinned=True)


class FakeRegistry:
    MODELS = ("tiny.en", "base")

    def resolve(self, name: str, *, trusted: bool = False) -> ModelInfo:
        if name not in self.MODELS:
            raise UnknownModel(f"Unknown model {name!r}; choose one of {', '.join(self.MODELS)}.")
        return ModelInfo(name, "packaged", local=True)

    def available(self) -> list[ModelInfo]:
        return [ModelInfo(name, "packaged", local=True) for name in self.MODELS]


@dataclass
class FakePool:
    models: list[LoadedModel] = field(default_factory=list)
    loads: int = 0
    unloads: int = 0

    def loaded(self) -> list[LoadedModel]:
        return list(self.models)

    def sweep(self) -> list[str]:
        return []


class FakeEngine:
    """Checked against ``Engine`` by the type checker (``_CHECKED`` below)."""

    engine = "fake"
    compute_type = "float32"
    encoder_compute_type = "float32"
    default_beam_size = 1
    device = "cpu"

    def __init__(
        self,
        *,
        windows: int = 2,
        segments: int = 1,
        words: bool = False,
        detected: tuple[str, float] | None = None,
        hold_from: int = 1,
        window_seconds: float = 0.0,
    ) -> None:
        self.registry = FakeRegistry()
        self.pool = FakePool()
        self.batches: list[list[str]] = []  # audio file names (job keys) per call
        # (model name, options) per call: what reached the engine.
        self.calls: list[tuple[str, TranscribeOptions]] = []
        # Per job: its known speakers' (name, reference file's bytes), read as it runs.
        self.known_speakers: list[list[tuple[str, bytes]]] = []
        # Each job reports progress after each of this many "windows".
        self._windows = windows
        # The transcript in this many segments (text "part i of ...") over the duration.
        self._segments = segments
        # True: segments carry word timings when the job asked for word_timestamps.
        self._words = words
        # (language, probability) reported when a job names no language; else "en", no probability.
        self._detected = detected
        # Windows before this one run freely; from it on each waits on ``gate``.
        self._hold_from = hold_from
        # Each window takes this long: a slow job.
        self._window_seconds = window_seconds
        # Cleared: jobs wait at their first held window until it is set again.
        self.gate = threading.Event()
        self.gate.set()
        # Set: each held window also takes one permit, so a test lets a job
        # through one window at a time (release()).
        self.steps: threading.Semaphore | None = None
        self.started = threading.Event()  # set once a job is being transcribed

    @property
    def loaded_models(self) -> list[str]:
        return [m.name for m in self.pool.models]

    def load(self, info: ModelInfo) -> None:
        if info.name not in self.loaded_models:
            self.pool.models.append(_loaded(info.name))
            self.pool.loads += 1

    def can_batch(self, duration: float, options: TranscribeOptions) -> bool:
        return 0 < duration <= BATCH_MAX_SECONDS and options.beam_size is None

    def guess(self, samples: np.ndarray, model: ModelInfo, options: TranscribeOptions) -> Transcription:
        outcome = self.transcribe_batch([BatchItem(samples, duration_hint=len(samples) / SAMPLE_RATE)], model, options)[
            0
        ]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def transcribe_batch(
        self, items: Sequence[BatchItem], model: ModelInfo, options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        self.load(model)
        self.batches.append([Path(str(item.audio)).name for item in items])
        self.calls.append((model.name, options))
        outcomes: list[Transcription | Exception] = []
        for item in items:
            try:
                outcomes.append(self._transcribe(item, options))
            except Exception as exc:  # a cancel raised by the progress report
                outcomes.append(exc)
        return outcomes

    def _transcribe(self, item: BatchItem, options: TranscribeOptions) -> Transcription:
        self.started.set()
        self.known_speakers.append([(name, Path(str(ref)).read_bytes()) for name, ref in item.known_speakers])
        text = f"fake transcript of {item.duration_hint:.1f} seconds"
        duration = round(item.duration_hint, 3)
        segments = [self._segment(i, duration, text, options) for i in range(self._segments)]
        sent = 0
        for window in range(1, self._windows + 1):
            if window >= self._hold_from:
                self.gate.wait(30)
                if self.steps is not None:
                    self.steps.acquire(timeout=30)
            if self._window_seconds:
                time.sleep(self._window_seconds)
            # Each window "decodes" its share of the segments, as a real engine does.
            upto = len(segments) * window // self._windows
            if item.on_segments is not None and upto > sent:
                item.on_segments(segments[sent:upto])
            sent = max(sent, upto)
            if item.on_progress is not None:
                item.on_progress(window / self._windows)
        language, probability = options.language or "en", None
        if options.language is None and self._detected is not None:
            language, probability = self._detected
        text = " ".join(s.text for s in segments)
        return Transcription(text, language, duration, segments, probability)

    def _segment(self, index: int, duration: float, text: str, options: TranscribeOptions) -> Segment:
        step = duration / self._segments
        start, end = round(index * step, 3), round((index + 1) * step, 3)
        said = text if self._segments == 1 else f"part {index + 1} of {text}"
        words = None
        if self._words and options.word_timestamps:
            pieces = said.split()
            span = (end - start) / len(pieces)
            words = [
                Word(w, round(start + k * span, 3), round(start + (k + 1) * span, 3), 0.9) for k, w in enumerate(pieces)
            ]
        return Segment(index, start, end, said, words)


# The type checker fails here if the fake drifts from the protocol it stands in for.
_CHECKED: type[Engine] = FakeEngine
