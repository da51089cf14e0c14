"""Several short jobs in one forward pass, for faster-whisper on CTranslate2.

As with openai-whisper (``openai_batch``), a clip of up to 30 s is one
decoding window, and on CPU most of a window's decode is per-step overhead, so
N windows decoded together cost far less than N decodes one by one.

faster-whisper's own ``transcribe()`` stays in charge of each job (VAD,
timestamps, temperature fallback, later windows, word timings), so the output
is what it gives alone, up to the float rounding of a batched matrix product:

1. **capture**: each job's ``transcribe()`` runs until its first decode, with
   stand-ins that record the features it encodes and the prompt and options
   it generates with, then stop it (nothing is decoded);
2. **batch**: those windows are encoded in one call and generated in one call
   (jobs grouped by generation options);
3. **replay**: each job's ``transcribe()`` runs for real, on a shallow copy of
   the model whose ``encode`` and ``generate`` answer exactly that first
   request from the batch. Any other request (a fallback temperature, a second
   window, word alignment) goes to the model.

The stand-ins take the place of faster-whisper's ``WhisperModel.model`` and
``WhisperModel.encode`` (compat.faster_whisper, hook ``encode``: without it
the backend never batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_mcp.compat import faster_whisper as fw_hooks


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    """Raised from the stand-in ``generate``: the first decode's request."""

    def __init__(self, prompt: list[int], kwargs: dict[str, Any]) -> None:
        super().__init__("first window captured")
        self.prompt = prompt
        self.kwargs = kwargs


_PENDING = object()  # what the capturing encode returns instead of encoder output


@dataclass
class FirstWindow:
    """One job's first decode: its request, then (after the batch) its answer."""

    features: np.ndarray  # what transcribe() passes to encode(), 2-D
    prompt: list[int]
    kwargs: dict[str, Any]
    encoder_output: Any = None  # ctranslate2.StorageView, batch of one
    result: Any = None  # ctranslate2.models.WhisperGenerationResult
    # The numpy array encoder_output views (from_array does not copy).
    keep: Any = field(default=None, repr=False)


class _Recorder:
    """Stands in for ``WhisperModel.model`` while capturing: stops at generate."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def generate(self, encoder_output: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        if encoder_output is not _PENDING or len(prompts) != 1:
            raise RuntimeError("unexpected generate call while capturing a first window")
        raise _Captured(list(prompts[0]), kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _Replay:
    """Stands in for ``WhisperModel.model``: the first window's generate is answered."""

    def __init__(self, model: Any, first: FirstWindow) -> None:
        self._model = model
        self._first: FirstWindow | None = first
        self.used = False

    def generate(self, encoder_output: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        first = self._first
        if (
            first is not None
            and encoder_output is first.encoder_output
            and prompts == [first.prompt]
            and kwargs == first.kwargs
        ):
            self._first, self.used = None, True
            return [first.result]
        return self._model.generate(encoder_output, prompts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


Start = Callable[[Any, np.ndarray], tuple[Iterable[Any], Any]]


def capture(whisper: Any, samples: np.ndarray, start: Start) -> FirstWindow | None:
    """What ``start(whisper, samples)`` (a ``transcribe()`` call) decodes first;
    None if it decodes nothing (no speech left after VAD, no frames)."""
    seen: list[np.ndarray] = []

    def encode(features: np.ndarray) -> Any:
        seen.append(np.array(features, dtype=np.float32, copy=True))
        return _PENDING

    clone = fw_hooks.swapped(whisper, _Recorder(fw_hooks.model_of(whisper)), encode)
    segments, _ = start(clone, samples)
    try:
        for _ in segments:
            break
    except _Captured as captured:
        if len(seen) != 1:
            raise RuntimeError(f"expected one encode before the first decode, saw {len(seen)}") from None
        features = seen[0][0] if seen[0].ndim == 3 else seen[0]
        return FirstWindow(features, captured.prompt, captured.kwargs)
    return None


def decode_batch(
    whisper: Any, firsts: Sequence[FirstWindow], per_encode: int = 0, on_encoded: Callable[[], None] | None = None
) -> None:
    """Encode and generate ``firsts`` in as few calls as their options and
    lengths allow, filling in each one's encoder output and result; the encoder takes at most
    ``per_encode`` windows a call (0: all), as each window in a call holds its
    own attention scores (tiny.en: about 100 MB in all). ``on_encoded`` is
    called when every window is encoded, before the decode."""
    import ctranslate2

    groups: list[list[FirstWindow]] = []
    for first in firsts:
        for group in groups:
            # One decode takes encoder outputs of one length (windows fitted to their audio differ).
            if group[0].kwargs == first.kwargs and group[0].features.shape == first.features.shape:
                group.append(first)
                break
        else:
            groups.append([first])
    model = fw_hooks.model_of(whisper)
    encoded: list[np.ndarray] = []
    for group in groups:
        features = np.ascontiguousarray(np.stack([f.features for f in group]), dtype=np.float32)
        # On the CPU, so each job's part can be handed back alone (see below).
        step = per_encode or len(group)
        parts = [
            np.asarray(model.encode(ctranslate2.StorageView.from_array(features[i : i + step]), to_cpu=True))
            for i in range(0, len(group), step)
        ]
        encoded.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
    if on_encoded is not None:
        on_encoded()
    for group, outputs in zip(groups, encoded, strict=True):
        results = model.generate(
            ctranslate2.StorageView.from_array(outputs), [f.prompt for f in group], **group[0].kwargs
        )
        for i, (first, result) in enumerate(zip(group, results, strict=True)):
            first.keep = np.ascontiguousarray(outputs[i : i + 1])
            first.encoder_output = ctranslate2.StorageView.from_array(first.keep)
            first.result = result


def replaying(whisper: Any, first: FirstWindow | None) -> tuple[Any, _Replay | None]:
    """A shallow copy of ``whisper`` whose first encode and generate are ``first``'s answers."""
    if first is None or first.result is None:
        return whisper, None
    replay = _Replay(fw_hooks.model_of(whisper), first)
    pending: list[FirstWindow] = [first]

    def encode(features: np.ndarray) -> Any:
        flat = features[0] if features.ndim == 3 else features
        if pending and flat.shape == first.features.shape and np.array_equal(flat, first.features):
            pending.clear()
            return first.encoder_output
        return whisper.encode(features)

    return fw_hooks.swapped(whisper, replay, encode), replay


__all__ = ["FirstWindow", "capture", "decode_batch", "replaying"]
