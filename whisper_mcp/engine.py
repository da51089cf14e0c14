"""The inference engine: loaded Whisper models and one ``transcribe`` call.

``WhisperEngine`` is what the worker uses; it delegates to a backend chosen by
configuration:

* ``openai`` (default): openai-whisper on torch;
* ``ctranslate2``: faster-whisper on CTranslate2 (``ct2_engine``), about twice as
  fast on CPU with int8 weights.

Both take the same ``TranscribeOptions`` and return the same ``Transcription``.
Everything here blocks; only the inference thread calls into it.
"""

from __future__ import annotations

import importlib
import threading
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import whisper
from whisper.model import Whisper

from .audio import SAMPLE_RATE
from .model_pool import ModelPool, estimate_bytes, model_bytes
from .models import ENGINES, ModelInfo, ModelRegistry
from .options import TranscribeOptions

ProgressCallback = Callable[[float], None]

# openai-whisper's temperature fallback schedule, used when a job sets none.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Every compute_type a setting may name; each engine accepts a subset (below).
COMPUTE_TYPES = ("default", "int8", "int8_float32", "int8_float16", "float32", "float16", "bfloat16")
ENGINE_ALIASES = {"faster-whisper": "ctranslate2", "faster_whisper": "ctranslate2", "ct2": "ctranslate2", "torch": "openai"}


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


_HOOKS = threading.local()  # .callback: the progress callback of this thread's job


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


class Backend(Protocol):
    """One inference library. The pool holds what ``load`` returns."""

    name: str
    device: str
    compute_type: str  # resolved: never "default"

    def load(self, info: ModelInfo) -> Any: ...

    def size(self, model: Any) -> int: ...

    def estimate(self, info: ModelInfo) -> int: ...

    def transcribe(
        self, model: Any, audio: np.ndarray, options: TranscribeOptions, on_progress: ProgressCallback | None
    ) -> Transcription: ...


class OpenAIBackend:
    """openai-whisper on torch; float16 on CUDA, float32 on CPU."""

    name = "openai"

    def __init__(self, registry: ModelRegistry, device: str, compute_type: str = "default") -> None:
        self.registry = registry
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        cuda = self.device.startswith("cuda")
        if compute_type == "default":
            compute_type = "float16" if cuda else "float32"
        allowed = ("float16", "float32") if cuda else ("float32",)
        if compute_type not in allowed:
            raise ValueError(
                f"compute_type {compute_type!r} is not available with engine openai on {self.device}; "
                f"choose default or {' or '.join(allowed)}, or engine ctranslate2 for int8."
            )
        self.compute_type = compute_type
        # openai-whisper reports progress only through tqdm; give its module a
        # tqdm of ours. Affects whisper.transcribe alone, and is idempotent.
        # (whisper/__init__ rebinds the name "transcribe" to the function, so
        # fetch the module itself.) The hooks are per thread, shared by every
        # engine in the process.
        self._hooks = _HOOKS
        importlib.import_module("whisper.transcribe").tqdm = types.SimpleNamespace(  # type: ignore[attr-defined]
            tqdm=lambda *a, **kw: _ProgressBar(_HOOKS, kw.get("total", 1))
        )

    def load(self, info: ModelInfo) -> Whisper:
        return self.registry.load(info, self.device)

    def size(self, model: Whisper) -> int:
        return model_bytes(model)

    def estimate(self, info: ModelInfo) -> int:
        return estimate_bytes(info)

    def transcribe(
        self,
        whisper_model: Whisper,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
    ) -> Transcription:
        language, probability = options.language, None
        if language is None and whisper_model.is_multilingual:
            language, probability = _detect_language(whisper_model, audio, self.compute_type == "float16")
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
                fp16=self.compute_type == "float16",
                verbose=None,
                temperature=FALLBACK_TEMPERATURES if options.temperature is None else options.temperature,
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


class WhisperEngine:
    """The models and the one ``transcribe`` call the worker uses.

    ``engine``: ``openai`` (default) or ``ctranslate2`` (faster-whisper).
    ``compute_type``: ``default`` (openai: float16 on CUDA, else float32;
    ctranslate2: float16 on CUDA, else int8), or one the engine supports on the
    device (ctranslate2: int8, int8_float32, int8_float16, float32, float16,
    bfloat16; openai: float32, float16 on CUDA). An unsupported choice raises
    ``ValueError`` here, at start-up, rather than at the first job.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        threads: int = 0,
        *,
        pinned: str | None = None,
        idle_seconds: float = 600.0,
        memory_budget_bytes: int = 0,
        engine: str = "openai",
        compute_type: str = "default",
    ) -> None:
        engine = (engine or "openai").strip().lower()
        engine = ENGINE_ALIASES.get(engine, engine)
        if engine not in ENGINES:
            raise ValueError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
        compute_type = (compute_type or "default").strip().lower()
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"Unknown compute_type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}.")
        if threads > 0:
            torch.set_num_threads(threads)
        self.registry = registry
        self.backend: Backend
        if engine == "ctranslate2":
            from .ct2_engine import CTranslate2Backend  # faster-whisper is optional

            self.backend = CTranslate2Backend(registry, device, compute_type, threads=torch.get_num_threads())
        else:
            self.backend = OpenAIBackend(registry, device, compute_type)
        # The registry offers the names this engine can load (no .pt for ctranslate2).
        registry.use_engine(engine)
        self.engine = engine
        self.compute_type = self.backend.compute_type
        self.device = self.backend.device
        self.pool = ModelPool(
            registry,
            self.device,
            pinned=pinned,
            idle_seconds=idle_seconds,
            memory_budget_bytes=memory_budget_bytes,
            load=self.backend.load,
            size=self.backend.size,
            estimate=self.backend.estimate,
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
        """Blocking. ``on_progress`` gets the fraction done (0..1, never
        decreasing) after each 30 s window, and for ctranslate2 after each
        segment too; an exception it raises (e.g. a cancel) stops decoding there."""
        with self.pool.use(model) as loaded:
            return self.backend.transcribe(loaded, audio, options, on_progress)


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


def _segment(s: dict) -> Segment:
    words = None
    if "words" in s:
        words = [(w["word"], w["start"], w["end"], w["probability"]) for w in s["words"]]
    return make_segment(int(s["id"]), s["start"], s["end"], s["text"], words)


def _detect_language(model: Whisper, audio: np.ndarray, fp16: bool) -> tuple[str, float]:
    # What transcribe() does internally, done here so the probability is kept.
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), model.dims.n_mels).to(model.device)
    if fp16:
        mel = mel.half()
    _, probs = model.detect_language(mel)
    language = max(probs, key=probs.get)
    return language, float(probs[language])
