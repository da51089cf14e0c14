"""The inference engine: loaded Whisper models and one ``transcribe`` call.

Everything here blocks; only the inference thread calls into it.
"""

from __future__ import annotations

import importlib
import threading
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import whisper
from whisper.model import Whisper

from .audio import SAMPLE_RATE
from .model_pool import ModelPool
from .models import ModelInfo, ModelRegistry
from .options import TranscribeOptions

ProgressCallback = Callable[[float], None]


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


class _ProgressBar:
    """Stands in for tqdm inside openai-whisper's transcribe loop, which is the
    only place that knows how far decoding has got. Reports to the callback that
    the current thread registered."""

    def __init__(self, hooks: threading.local, total: int, **_: object) -> None:
        self._callback: ProgressCallback | None = getattr(hooks, "callback", None)
        self._total = max(int(total), 1)
        self._done = 0

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self._done += n
        if self._callback is not None:
            self._callback(min(self._done / self._total, 1.0))


class WhisperEngine:
    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        threads: int = 0,
        *,
        pinned: str | None = None,
        idle_seconds: float = 600.0,
        memory_budget_bytes: int = 0,
    ) -> None:
        self.registry = registry
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if threads > 0:
            torch.set_num_threads(threads)
        self.pool = ModelPool(
            registry,
            self.device,
            pinned=pinned,
            idle_seconds=idle_seconds,
            memory_budget_bytes=memory_budget_bytes,
        )
        self._hooks = threading.local()
        # openai-whisper reports progress only through tqdm; give its module a
        # tqdm of ours. Affects whisper.transcribe alone, and is idempotent.
        # (whisper/__init__ rebinds the name "transcribe" to the function, so
        # fetch the module itself.)
        hooks = self._hooks
        importlib.import_module("whisper.transcribe").tqdm = types.SimpleNamespace(  # type: ignore[attr-defined]
            tqdm=lambda *a, **kw: _ProgressBar(hooks, kw.get("total", 1))
        )

    @property
    def loaded_models(self) -> list[str]:
        return [m.name for m in self.pool.loaded()]

    def load(self, info: ModelInfo) -> None:
        self.pool.get(info)

    def transcribe(
        self,
        audio: np.ndarray,
        model: ModelInfo,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None = None,
    ) -> Transcription:
        """Blocking. ``on_progress`` gets the fraction done after each 30 s window;
        an exception it raises (e.g. a cancel) stops decoding there."""
        with self.pool.use(model) as whisper_model:
            return self._transcribe(whisper_model, audio, options, on_progress)

    def _transcribe(
        self,
        whisper_model: Whisper,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
    ) -> Transcription:
        language, probability = options.language, None
        if language is None and whisper_model.is_multilingual:
            language, probability = _detect_language(whisper_model, audio)
        extra: dict[str, object] = {}
        if options.beam_size is not None:
            extra["beam_size"] = options.beam_size
        self._hooks.callback = on_progress
        try:
            result = whisper.transcribe(
                whisper_model,
                audio,
                language=language,
                task=options.task,
                initial_prompt=options.initial_prompt,
                word_timestamps=options.word_timestamps,
                fp16=self.device == "cuda",
                verbose=None,
                temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if options.temperature is None else options.temperature,
                **extra,
            )
        finally:
            self._hooks.callback = None
        return Transcription(
            text=str(result["text"]).strip(),
            language=result.get("language"),
            duration=round(len(audio) / SAMPLE_RATE, 3),
            segments=[_segment(s) for s in result["segments"]],
            language_probability=None if probability is None else round(probability, 4),
        )


def _segment(s: dict) -> Segment:
    words = None
    if "words" in s:
        words = [
            Word(str(w["word"]), round(float(w["start"]), 3), round(float(w["end"]), 3), round(float(w["probability"]), 4))
            for w in s["words"]
        ]
    return Segment(int(s["id"]), round(float(s["start"]), 3), round(float(s["end"]), 3), str(s["text"]).strip(), words)


def _detect_language(model: Whisper, audio: np.ndarray) -> tuple[str, float]:
    # What transcribe() does internally, done here so the probability is kept.
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), model.dims.n_mels).to(model.device)
    if model.device.type == "cuda":
        mel = mel.half()
    _, probs = model.detect_language(mel)
    language = max(probs, key=probs.get)
    return language, float(probs[language])
