"""Every use of faster-whisper's private code, written for faster-whisper 1.2.1.

* its module's ``tqdm`` and ``pad_or_trim`` (``compat.patching``): progress,
  and so cancel, while a file decodes, silent windows included;
* ``BatchedInferencePipeline._batched_segments_generator``, overridden so that
  the first forward passes of a VAD-batched file take fewer chunks
  (``batched_pipeline``);
* ``WhisperModel.model`` (the ``ctranslate2.models.Whisper`` it decodes with)
  and ``WhisperModel.encode``, swapped for stand-ins: the encoder on a model
  of its own (``set_model``), and short jobs sharing one forward pass
  (``swapped``, see ``engines.ctranslate2_batch``).

None of them is fatal: without one, a public path runs, listed in /health.
faster-whisper is imported only by the functions here, never at import.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from whisper_mcp.compat.hooks import Check, Hook, Library
from whisper_mcp.compat.patching import replace_tqdm, report_windows, window_hook

log = logging.getLogger("whisper_mcp.compat")

MODULE = "faster_whisper.transcribe"
_M = MODULE + ":"

LIBRARY = Library(
    "faster-whisper",
    "1.2.1",
    (
        Hook(
            "tqdm",
            "progress and cancel while a file decodes, after each chunk when VAD-batched",
            (_M + "tqdm",),
            "progress and cancel at each segment's end only",
        ),
        window_hook(MODULE, fitted=True),
        Hook(
            "_batched_segments_generator",
            "the first VAD-batched text after one chunk: smaller first batches",
            (
                _M + "BatchedInferencePipeline._batched_segments_generator"
                "(self, features, tokenizer, chunks_metadata, batch_size, options, log_progress)",
                _M + "BatchedInferencePipeline.forward(self, features, tokenizer, chunks_metadata, options)",
                _M + "Segment",
                _M + "Word",
            ),
            "faster-whisper's own batches: the first text after a whole batch",
        ),
        Hook(
            "model",
            "the encoder on a model of its own, with its own precision and threads",
            (_M + "WhisperModel[model]", _M + "WhisperModel.encode[model]"),
            "one model encodes and decodes, slower on CPU",
        ),
        Hook(
            "encode",
            "short jobs sharing one forward pass",
            (
                _M + "WhisperModel[model]",
                _M + "WhisperModel.encode(self, features)",
                _M + "WhisperModel.generate_segments[encode]",
                _M + "WhisperModel.generate_with_fallback[generate]",
            ),
            "short jobs run one by one",
        ),
    ),
)


@functools.cache
def check() -> Check:
    """The hooks against the installed faster-whisper (imports it); once per process."""
    return LIBRARY.examine()


def install(
    bar: Callable[..., Any],
    window_started: Callable[[int], None],
    window_frames: Callable[[int], int | None] | None = None,
) -> Check:
    """The progress patches whose names are present: faster-whisper's bars
    built with ``bar``, ``window_started(frames)`` at each window, which is
    padded to ``window_frames(frames)`` frames where that gives a length.
    Process-wide and idempotent; the check says what else may be used."""
    found = check()
    found.raise_if_fatal()
    found.log(log)
    module = importlib.import_module(MODULE)
    if found.has("tqdm"):
        replace_tqdm(module, bar, calls_module=False)
        if found.has("pad_or_trim"):  # its reports go to the bar
            report_windows(module, window_started, window_frames)
    return found


def model_of(whisper: Any) -> Any:
    """The ``ctranslate2.models.Whisper`` a ``WhisperModel`` decodes with."""
    return whisper.model


def set_model(whisper: Any, model: Any) -> None:
    """``whisper`` decodes with ``model`` (a stand-in for its own) from now on."""
    whisper.model = model


def swapped(whisper: Any, model: Any, encode: Callable[[Any], Any]) -> Any:
    """A shallow copy of ``whisper`` that encodes with ``encode`` and decodes with ``model``."""
    clone = copy.copy(whisper)
    clone.encode = encode
    clone.model = model
    return clone


def is_multilingual(whisper: Any) -> bool:
    # Public: an English-only model supports "en" alone.
    return list(whisper.supported_languages) != ["en"]


def batched_pipeline(whisper: Any, ramp: Sequence[int], bar: Callable[..., Any]) -> Any:
    """faster-whisper's BatchedInferencePipeline for ``whisper``, whose first
    forward passes take ``ramp`` chunks (then the batch size), one ``bar``
    over all chunks; faster-whisper's own where the hook is gone."""
    faster_whisper = importlib.import_module("faster_whisper")
    if not check().has("_batched_segments_generator"):
        return faster_whisper.BatchedInferencePipeline(whisper)
    module = importlib.import_module(MODULE)
    Segment, Word = module.Segment, module.Word

    # The base class comes from a module loaded at run time, which the type checker cannot see.
    class Ramped(faster_whisper.BatchedInferencePipeline):  # type: ignore[name-defined]
        # faster-whisper 1.2.1's generator, the one loop that picks batch
        # sizes, with the ramp.
        def _batched_segments_generator(  # noqa: ANN001 (faster-whisper's own signature)
            self, features, tokenizer, chunks_metadata, batch_size, options, log_progress
        ) -> Iterator[Any]:
            progress = bar(total=len(features), disable=not log_progress, position=0)
            seg_idx, start = 0, 0
            sizes = iter(ramp)
            while start < len(features):
                size = min(next(sizes, batch_size), batch_size)
                results = self.forward(
                    features[start : start + size], tokenizer, chunks_metadata[start : start + size], options
                )
                start += size
                for result in results:
                    for segment in result:
                        seg_idx += 1
                        yield Segment(
                            seek=segment["seek"],
                            id=seg_idx,
                            text=segment["text"],
                            start=round(segment["start"], 3),
                            end=round(segment["end"], 3),
                            words=None if not options.word_timestamps else [Word(**w) for w in segment["words"]],
                            tokens=segment["tokens"],
                            avg_logprob=segment["avg_logprob"],
                            no_speech_prob=segment["no_speech_prob"],
                            compression_ratio=segment["compression_ratio"],
                            temperature=options.temperatures[0],
                        )
                    progress.update(1)
            progress.close()
            self.last_speech_timestamp = 0.0

    return Ramped(whisper)


__all__ = [
    "LIBRARY",
    "batched_pipeline",
    "check",
    "install",
    "is_multilingual",
    "model_of",
    "set_model",
    "swapped",
]
