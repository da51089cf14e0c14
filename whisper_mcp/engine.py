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
from .models import ModelInfo, ModelRegistry

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class DecodeOptions:
    """Per-job decoding choices, in the spirit of openai-whisper's DecodingOptions."""

    language: str | None = None  # None: detect (multilingual models)
    task: str = "transcribe"


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str | None
    duration: float
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
    def __init__(self, registry: ModelRegistry, device: str = "auto", threads: int = 0) -> None:
        self.registry = registry
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if threads > 0:
            torch.set_num_threads(threads)
        self._models: dict[str, Whisper] = {}
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
        return list(self._models)

    def load(self, info: ModelInfo) -> Whisper:
        model = self._models.get(info.name)
        if model is None:
            model = self.registry.load(info, self.device)
            self._models[info.name] = model
        return model

    def transcribe(
        self,
        audio: np.ndarray,
        model: ModelInfo,
        options: DecodeOptions,
        on_progress: ProgressCallback | None = None,
    ) -> Transcription:
        whisper_model = self.load(model)
        self._hooks.callback = on_progress
        try:
            result = whisper.transcribe(
                whisper_model,
                audio,
                language=options.language,
                task=options.task,
                fp16=self.device == "cuda",
                verbose=False,  # False (not None) so the progress bar is created
                temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
            )
        finally:
            self._hooks.callback = None
        segments = [
            Segment(int(s["id"]), round(float(s["start"]), 3), round(float(s["end"]), 3), str(s["text"]).strip())
            for s in result["segments"]
        ]
        return Transcription(
            text=str(result["text"]).strip(),
            language=result.get("language"),
            duration=round(len(audio) / SAMPLE_RATE, 3),
            segments=segments,
        )
