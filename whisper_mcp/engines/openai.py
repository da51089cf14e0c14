"""The ``openai`` backend: openai-whisper on torch (the default engine).

The audio is streamed into log-Mel features (``mel``) rather than decoded
whole, and several short jobs can share one forward pass
(``openai_batch``). float16 on CUDA, float32 on CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import whisper
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper

from whisper_mcp.compat import openai_whisper as ow_hooks
from whisper_mcp.engines import progress
from whisper_mcp.engines.audio import decode_audio, stream_audio
from whisper_mcp.engines.base import (
    AudioInput,
    BatchItem,
    Decoded,
    ProgressCallback,
    Segment,
    SegmentCallback,
    Transcription,
    make_segment,
)
from whisper_mcp.engines.mel import Mel, log_mel
from whisper_mcp.engines.openai_batch import Prefetched, decode_first_windows, detect_languages
from whisper_mcp.engines.vad import speech_spans
from whisper_mcp.models.pool import estimate_bytes, model_bytes
from whisper_mcp.models.registry import ModelInfo, ModelRegistry
from whisper_mcp.options import TranscribeOptions, temperatures

log = logging.getLogger(__name__)


class OpenAIBackend:
    """openai-whisper on torch; float16 on CUDA, float32 on CPU."""

    name = "openai"
    batching = True
    tells_encoded = False

    def __init__(
        self, registry: ModelRegistry, device: str, compute_type: str = "default", default_beam_size: int = 0
    ) -> None:
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
        self.encoder_compute_type = compute_type  # one model, one precision
        # 0: greedy, as its beam search is slow on CPU and cannot batch.
        self.default_beam_size = default_beam_size if default_beam_size > 0 else 1
        self.fp16 = compute_type == "float16"
        self.batched_windows = 0  # first windows decoded in a batch (transcribe_batch)
        # transcribe() reports progress only to its tqdm bar, computes the
        # features of the whole waveform itself, and keeps each window's
        # segments to itself until it returns: process-wide, idempotent patches
        # of its module (compat.openai_whisper, see progress and mel).
        self.hooks = ow_hooks.install(progress.ProgressBar, progress.window_started, Mel)

    def load(self, info: ModelInfo) -> Whisper:
        return self.registry.load(info, self.device)

    def prepare(self, model: Whisper) -> None:
        pass  # load() leaves nothing for later

    def size(self, model: Whisper) -> int:
        return model_bytes(model)

    def estimate(self, info: ModelInfo) -> int:
        return estimate_bytes(info)

    def batchable(self, options: TranscribeOptions) -> bool:
        # With vad_filter the first window starts where speech does, not where
        # decode_first_windows looks: such jobs run one by one.
        # Greedy jobs only, the default beam counted (openai_batch.batchable).
        return (options.beam_size or self.default_beam_size) <= 1 and not options.vad_filter

    def detect_language(self, model: Whisper, samples: np.ndarray) -> tuple[str, float]:
        return detect_languages(model, [_features(model, samples, 0.0)], self.fp16)[0]

    def transcribe(
        self,
        whisper_model: Whisper,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        duration_hint: float = 0.0,
        on_segments: SegmentCallback | None = None,
    ) -> Transcription:
        clips: list[float] | None = None
        if options.vad_filter:
            # The detector needs the whole waveform: decoded at once, not streamed.
            samples = decode_audio(audio) if isinstance(audio, Path) else audio
            spans = speech_spans(samples)
            if not spans:  # no speech: nothing to decode, so nothing to hallucinate
                if on_progress is not None:
                    on_progress(1.0)
                english = None if whisper_model.is_multilingual else "en"
                return Transcription("", options.language or english, round(len(samples) / SAMPLE_RATE, 3))
            clips = [t for span in spans for t in span]
            audio = samples
        mel = _features(whisper_model, audio, duration_hint)
        language, probability = options.language, None
        if language is None and whisper_model.is_multilingual:
            language, probability = detect_languages(whisper_model, [mel], self.fp16)[0]
        return self._transcribe_mel(whisper_model, mel, options, on_progress, language, probability, on_segments, clips)

    def guess(self, whisper_model: Whisper, samples: np.ndarray, options: TranscribeOptions) -> Transcription | None:
        """None: openai-whisper's encoder takes only whole 30 s windows, so a
        guess costs what a decode does."""
        return None

    def transcribe_batch(
        self, whisper_model: Whisper, items: Sequence[BatchItem], options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Short jobs with the same options: their first (for clips of up to
        30 s, only) window is decoded in one batched forward pass; the rest of
        each job runs through transcribe() as usual. An item's failure is its
        own outcome."""
        if options.vad_filter:  # not batchable (see batchable); one by one
            return [self._one(whisper_model, item, options) for item in items]
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
        for i, (language, probability), first in zip(order, languages, firsts, strict=True):
            model = Prefetched(whisper_model, first)
            try:
                outcomes[i] = self._transcribe_mel(
                    model, mels[i], options, items[i].on_progress, language, probability, items[i].on_segments
                )
            except Exception as exc:
                outcomes[i] = exc
            self.batched_windows += model.used
        return outcomes

    def _one(self, whisper_model: Whisper, item: BatchItem, options: TranscribeOptions) -> Transcription | Exception:
        try:
            return self.transcribe(
                whisper_model, item.audio, options, item.on_progress, item.duration_hint, item.on_segments
            )
        except Exception as exc:
            return exc

    def _transcribe_mel(
        self,
        whisper_model: Whisper | Prefetched,
        mel: Mel,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        language: str | None,
        probability: float | None,
        on_segments: SegmentCallback | None = None,
        clips: list[float] | None = None,
    ) -> Transcription:
        extra: dict[str, object] = {}
        if options.beam_size is not None:
            extra["beam_size"] = options.beam_size
        elif self.default_beam_size > 1:
            extra["beam_size"] = self.default_beam_size
        if clips is not None:
            # Start, end, start, end... seconds: the windows begin at each span
            # and stop at its end; timestamps count from the recording's start.
            extra["clip_timestamps"] = clips
        feed = None if on_segments is None else _SegmentFeed(on_segments)
        with progress.reporting(on_progress, feed):
            result = whisper.transcribe(
                _Checked(whisper_model),  # stands in for the model
                mel,  # taken as features: compat.openai_whisper
                language=language,
                task=options.task,
                initial_prompt=options.initial_prompt,
                word_timestamps=options.word_timestamps,
                fp16=self.fp16,
                verbose=None,
                temperature=temperatures(options),
                **extra,
            )
        if feed is not None:
            feed(result["segments"])  # any the windows did not pass on (none, unless that hook is gone)
        if clips is not None and on_progress is not None:
            on_progress(1.0)  # its bar counts only the frames inside the clips
        return Transcription(
            text=str(result["text"]).strip(),
            language=result.get("language"),
            duration=round(mel.duration, 3),
            segments=[_segment(s) for s in result["segments"]],
            language_probability=None if probability is None else round(probability, 4),
        )


class _Checked:
    """The model, except that every decode reports progress first: a window
    that fails its quality checks is decoded again at up to six temperatures
    (near-silence often is), and a cancel must not wait for all of them."""

    def __init__(self, model: Whisper | Prefetched) -> None:
        self._model = model

    def decode(self, mel: torch.Tensor, options: Any) -> Any:
        progress.check()
        return self._model.decode(mel, options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)  # word timings run the model directly

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _features(model: Whisper, audio: AudioInput, duration_hint: float) -> Mel:
    if isinstance(audio, Path):
        return log_mel(stream_audio(audio), model.dims.n_mels, duration_hint)
    return log_mel([audio], model.dims.n_mels, len(audio) / SAMPLE_RATE)


def _segment(s: dict) -> Segment:
    words = None
    if "words" in s:
        words = [(w["word"], w["start"], w["end"], w["probability"]) for w in s["words"]]
    decoded = Decoded(
        s["seek"], s["tokens"], s["temperature"], s["avg_logprob"], s["compression_ratio"], s["no_speech_prob"]
    )
    return make_segment(int(s["id"]), s["start"], s["end"], s["text"], words, decoded)


class _SegmentFeed:
    """Passes on the segments ``transcribe()`` has finished since the last
    window (its ``all_segments``, see ``compat.openai_whisper``)."""

    def __init__(self, on_segments: SegmentCallback) -> None:
        self._on_segments = on_segments
        self._sent = 0

    def __call__(self, finished: list[dict]) -> None:
        new = finished[self._sent :]
        if new:
            self._sent = len(finished)
            self._on_segments([_segment(s) for s in new])


__all__ = ["OpenAIBackend"]
