"""Several short jobs in one forward pass, for openai-whisper.

A clip of up to 30 s is one decoding window, and on CPU that window's decode
is mostly per-token overhead (tiny matrices, a Python loop per token), so
decoding N windows together costs far less than N decodes one by one.

``transcribe()`` itself stays in charge of each job: timestamps, fallback to
higher temperatures, later windows, word timings. ``decode_first_windows``
decodes, in one batch, the first window exactly as ``transcribe()`` will ask
for it (same mel segment, same ``DecodingOptions``); ``Prefetched`` stands in
for the model and answers that one request from the batch. Any other request
(a fallback temperature, a second window), or a request that differs in any
way, goes to the model, so the output is what ``transcribe()`` would produce
alone, up to the float rounding of a batched matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import whisper
from whisper.audio import N_FRAMES
from whisper.decoding import DecodingOptions, DecodingResult
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from whisper_mcp.engines.mel import Mel
from whisper_mcp.options import TranscribeOptions, temperatures


@dataclass(frozen=True)
class FirstWindow:
    """A decode done ahead of ``transcribe()``: its input and its result."""

    segment: torch.Tensor
    options: DecodingOptions
    result: DecodingResult


class Prefetched:
    """The model, except that the one decode in ``first`` is already done."""

    def __init__(self, model: Whisper, first: FirstWindow | None) -> None:
        self._model = model
        self._first = first
        self.used = False  # whether transcribe() took the prefetched result

    def decode(self, mel: torch.Tensor, options: DecodingOptions) -> DecodingResult | list[DecodingResult]:
        first = self._first
        if (
            first is not None
            and options == first.options
            and mel.shape == first.segment.shape
            and torch.equal(mel, first.segment)
        ):
            self._first, self.used = None, True
            return first.result
        return self._model.decode(mel, options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)  # word timings run the model directly

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def batchable(options: TranscribeOptions) -> bool:
    """Whether jobs with these options can share a forward pass. Not with beam
    search: openai-whisper's decode() fails on a batch when beam_size > 1
    (openai/whisper pull request 2197, unmerged)."""
    return options.beam_size is None or options.beam_size <= 1


def detect_languages(model: Whisper, mels: Sequence[Mel], fp16: bool) -> list[tuple[str, float]]:
    """Each clip's most likely language and its probability, from its first 30 s
    (as ``transcribe()`` detects it), in one forward pass."""
    if not mels:
        return []
    batch = torch.stack([whisper.pad_or_trim(m.mel, N_FRAMES) for m in mels]).to(model.device)
    if fp16:
        batch = batch.half()
    _, probs = model.detect_language(batch)
    best = [max(p, key=p.get) for p in probs]
    return [(language, float(p[language])) for language, p in zip(best, probs, strict=True)]


def decode_first_windows(
    model: Whisper, mels: Sequence[Mel], languages: Sequence[str | None], options: TranscribeOptions, fp16: bool
) -> list[FirstWindow | None]:
    """Decode each clip's first window as ``transcribe()`` will ask for it,
    batching clips that share a language; None for a clip with no audio frames."""
    firsts: list[FirstWindow | None] = [None] * len(mels)
    if not batchable(options):
        return firsts
    groups: dict[str | None, list[int]] = {}
    for i, (mel, language) in enumerate(zip(mels, languages, strict=True)):
        if mel.content_frames > 0:
            # transcribe() settles an English-only model's language as "en".
            groups.setdefault(language if model.is_multilingual else "en", []).append(i)
    for language, members in groups.items():
        decode_options = first_window_options(model, options, language, fp16)
        segments = [first_segment(model, mels[i], fp16) for i in members]
        results = model.decode(torch.stack(segments), decode_options)
        for i, segment, result in zip(members, segments, results, strict=True):
            firsts[i] = FirstWindow(segment, decode_options, result)
    return firsts


def first_segment(model: Whisper, mel: Mel, fp16: bool) -> torch.Tensor:
    # transcribe(): mel[:, seek : seek + segment_size], padded to N_FRAMES, at seek 0.
    segment = whisper.pad_or_trim(mel.mel[:, : min(N_FRAMES, mel.content_frames)], N_FRAMES)
    return segment.to(model.device).to(torch.float16 if fp16 else torch.float32)


def first_window_options(
    model: Whisper, options: TranscribeOptions, language: str | None, fp16: bool
) -> DecodingOptions:
    """The ``DecodingOptions`` of ``transcribe()``'s first decode, built as it builds them."""
    temperature = temperatures(options)[0]
    prompt: list[int] = []
    if options.initial_prompt is not None:
        tokenizer = get_tokenizer(
            model.is_multilingual, num_languages=model.num_languages, language=language, task=options.task
        )
        prompt = tokenizer.encode(" " + options.initial_prompt.strip())
    kwargs: dict[str, Any] = {"language": language, "task": options.task, "fp16": fp16, "prompt": prompt}
    if options.beam_size is not None and temperature == 0:
        kwargs["beam_size"] = options.beam_size  # transcribe() drops it when sampling
    return DecodingOptions(**kwargs, temperature=temperature)
