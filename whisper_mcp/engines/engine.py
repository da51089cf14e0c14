"""The inference engine: loaded Whisper models and one ``transcribe`` call.

``WhisperEngine`` is what the worker uses; it delegates to a backend chosen by
configuration:

* ``openai`` (default): openai-whisper on torch;
* ``ctranslate2``: faster-whisper on CTranslate2 (``ct2_engine``), about twice as
  fast on CPU with int8 weights.

Both take the same ``TranscribeOptions`` and return the same ``Transcription``.
The openai backend streams the audio into log-Mel features (``mel``) and can
run several short jobs in one forward pass (``batch``); the ctranslate2 one
can batch a file's speech chunks instead (``vad_batching``).
Everything here blocks; only the inference thread calls into it.
"""

from __future__ import annotations

import importlib
import logging
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import whisper
from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.model import Whisper

from whisper_mcp.engines.audio import stream_audio
from whisper_mcp.engines.base import (
    BATCH_MAX_SECONDS,
    ENGINES,
    COMPUTE_TYPES,
    AudioInput,
    BatchItem,
    ProgressCallback,
    Segment,
    Transcription,
    make_segment,
)
from whisper_mcp.engines.mel import Mel, log_mel
from whisper_mcp.models.pool import ModelPool, estimate_bytes, model_bytes
from whisper_mcp.models.registry import ModelInfo, ModelRegistry
from whisper_mcp.engines.openai_batch import Prefetched, batchable, decode_first_windows, detect_languages
from whisper_mcp.options import TranscribeOptions, temperatures

log = logging.getLogger("whisper_mcp.engines.engine")


ENGINE_ALIASES = {"faster-whisper": "ctranslate2", "faster_whisper": "ctranslate2", "ct2": "ctranslate2", "torch": "openai"}


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

    # Whether transcribe_batch() decodes several jobs in one forward pass.
    batching: bool

    def transcribe(
        self,
        model: Any,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        duration_hint: float = 0.0,
    ) -> Transcription: ...


class OpenAIBackend:
    """openai-whisper on torch; float16 on CUDA, float32 on CPU."""

    name = "openai"
    batching = True

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
        self.fp16 = compute_type == "float16"
        self.batched_windows = 0  # first windows decoded in a batch (transcribe_batch)
        # openai-whisper reports progress only through tqdm; give its module a
        # tqdm of ours. Affects whisper.transcribe alone, and is idempotent.
        # (whisper/__init__ rebinds the name "transcribe" to the function, so
        # fetch the module itself.) The hooks are per thread, shared by every
        # engine in the process.
        self._hooks = _HOOKS
        module = importlib.import_module("whisper.transcribe")
        module.tqdm = types.SimpleNamespace(  # type: ignore[attr-defined]
            tqdm=lambda *a, **kw: _ProgressBar(_HOOKS, kw.get("total", 1))
        )
        # transcribe() computes the features of the whole waveform in one go;
        # handed ``Mel`` instead of samples, it uses those (see mel.py).
        if not hasattr(module.log_mel_spectrogram, "accepts_mel"):
            module.log_mel_spectrogram = _precomputed_mel_or(module.log_mel_spectrogram)  # type: ignore[attr-defined]

    def load(self, info: ModelInfo) -> Whisper:
        return self.registry.load(info, self.device)

    def size(self, model: Whisper) -> int:
        return model_bytes(model)

    def estimate(self, info: ModelInfo) -> int:
        return estimate_bytes(info)

    def transcribe(
        self,
        whisper_model: Whisper,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        duration_hint: float = 0.0,
    ) -> Transcription:
        mel = _features(whisper_model, audio, duration_hint)
        language, probability = options.language, None
        if language is None and whisper_model.is_multilingual:
            language, probability = detect_languages(whisper_model, [mel], self.fp16)[0]
        return self._transcribe_mel(whisper_model, mel, options, on_progress, language, probability)

    def transcribe_batch(
        self, whisper_model: Whisper, items: Sequence[BatchItem], options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Short jobs with the same options: their first (for clips of up to
        30 s, only) window is decoded in one batched forward pass; the rest of
        each job runs through transcribe() as usual. An item's failure is its
        own outcome."""
        # Every slot is replaced below: by a failure to decode, or by the job's outcome.
        outcomes: list[Transcription | Exception] = [RuntimeError("not run")] * len(items)
        mels: dict[int, Mel] = {}
        for i, item in enumerate(items):
            try:
                mels[i] = _features(whisper_model, item.audio, item.duration_hint)
            except Exception as exc:  # e.g. audio that stopped decoding half-way
                outcomes[i] = exc
        order = list(mels)
        languages: list[tuple[str | None, float | None]] = [(options.language, None)] * len(order)
        if options.language is None and whisper_model.is_multilingual:
            languages = list(detect_languages(whisper_model, [mels[i] for i in order], self.fp16))
        try:
            firsts = decode_first_windows(
                whisper_model, [mels[i] for i in order], [lang for lang, _ in languages], options, self.fp16
            )
        except Exception:  # e.g. out of GPU memory for the whole batch: run the jobs one by one
            log.warning("batched decode of %d jobs failed; running them one by one", len(order), exc_info=True)
            firsts = [None] * len(order)
        for i, (language, probability), first in zip(order, languages, firsts):
            model = Prefetched(whisper_model, first)
            try:
                outcomes[i] = self._transcribe_mel(model, mels[i], options, items[i].on_progress, language, probability)
            except Exception as exc:
                outcomes[i] = exc
            self.batched_windows += model.used
        return outcomes

    def _transcribe_mel(
        self,
        whisper_model: Whisper | Prefetched,
        mel: Mel,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        language: str | None,
        probability: float | None,
    ) -> Transcription:
        extra: dict[str, object] = {}
        if options.beam_size is not None:
            extra["beam_size"] = options.beam_size
        self._hooks.callback = on_progress
        try:
            result = whisper.transcribe(
                whisper_model,  # type: ignore[arg-type]  # Prefetched stands in for the model
                mel,  # type: ignore[arg-type]  # see _precomputed_mel_or
                language=language,
                task=options.task,
                initial_prompt=options.initial_prompt,
                word_timestamps=options.word_timestamps,
                fp16=self.fp16,
                verbose=None,
                temperature=temperatures(options),
                **extra,
            )
        finally:
            self._hooks.callback = None
        return Transcription(
            text=str(result["text"]).strip(),
            language=result.get("language"),
            duration=round(mel.duration, 3),
            segments=[_segment(s) for s in result["segments"]],
            language_probability=None if probability is None else round(probability, 4),
        )


def _features(model: Whisper, audio: AudioInput, duration_hint: float) -> Mel:
    if isinstance(audio, Path):
        return log_mel(stream_audio(audio), model.dims.n_mels, duration_hint)
    return log_mel([audio], model.dims.n_mels, len(audio) / SAMPLE_RATE)


def _precomputed_mel_or(log_mel_spectrogram: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``log_mel_spectrogram`` that passes precomputed ``Mel`` through."""

    def log_mel_or_precomputed(audio: Any, n_mels: int = 80, padding: int = 0, device: Any = None) -> torch.Tensor:
        if isinstance(audio, Mel):
            # transcribe() asks for exactly this: its model's n_mels, 30 s of padding.
            if n_mels != audio.n_mels or padding != N_SAMPLES:
                raise ValueError(f"features have {audio.n_mels} mels and 30 s padding; asked for {n_mels}, {padding}")
            return audio.mel if device is None else audio.mel.to(device)
        return log_mel_spectrogram(audio, n_mels, padding, device)

    log_mel_or_precomputed.accepts_mel = True  # type: ignore[attr-defined]
    return log_mel_or_precomputed


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
        batch_size: int = 8,
        vad_batching: bool = False,
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
            from whisper_mcp.engines.ctranslate2 import CTranslate2Backend  # faster-whisper is optional

            self.backend = CTranslate2Backend(
                registry,
                device,
                compute_type,
                threads=torch.get_num_threads(),
                vad_batching=vad_batching,
                batch_size=batch_size,
            )
        elif vad_batching:
            raise ValueError("vad_batching needs engine ctranslate2 (faster-whisper); the openai engine has no VAD.")
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
        audio: AudioInput,
        model: ModelInfo,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None = None,
        duration_hint: float = 0.0,
    ) -> Transcription:
        """Blocking. ``audio`` is a file (decoded here, in a stream where the
        engine allows; ``InvalidAudio`` if it cannot be) or samples;
        ``duration_hint`` (seconds, e.g. from the probe) sizes buffers up front.
        ``on_progress`` gets the fraction done (0..1, never decreasing) after
        each 30 s window, and for ctranslate2 after each segment too; an
        exception it raises (e.g. a cancel) stops decoding there."""
        with self.pool.use(model) as loaded:
            return self.backend.transcribe(loaded, audio, options, on_progress, duration_hint)

    def transcribe_batch(
        self, items: Sequence[BatchItem], model: ModelInfo, options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Blocking. Several jobs with the same model and options (see
        ``can_batch``); each gets its own outcome, a transcription or the
        exception that ended it (a cancel raised by its progress callback, audio
        that would not decode). Engines without batching run them in turn."""
        with self.pool.use(model) as loaded:
            if len(items) > 1 and self.backend.batching:
                return self.backend.transcribe_batch(loaded, items, options)  # type: ignore[attr-defined]
            outcomes: list[Transcription | Exception] = []
            for item in items:
                try:
                    outcomes.append(
                        self.backend.transcribe(loaded, item.audio, options, item.on_progress, item.duration_hint)
                    )
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    def can_batch(self, duration: float, options: TranscribeOptions) -> bool:
        """Whether a job this long, with these options, may share a forward pass with others."""
        return self.backend.batching and 0 < duration <= BATCH_MAX_SECONDS and batchable(options)


def _segment(s: dict) -> Segment:
    words = None
    if "words" in s:
        words = [(w["word"], w["start"], w["end"], w["probability"]) for w in s["words"]]
    return make_segment(int(s["id"]), s["start"], s["end"], s["text"], words)
