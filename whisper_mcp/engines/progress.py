"""Decoding progress from libraries that report it only to tqdm.

openai-whisper's ``transcribe()`` and faster-whisper's segment generator are
the only places that know how far decoding has got, and they tell nobody but a
tqdm bar, made from their module's global ``tqdm``. ``install`` replaces that
global with ``ProgressBar``; each bar reports the fraction done to the callback
its thread set with ``reporting``. The callback is per thread, so engines
decoding on different threads of one process never report each other's jobs.
The bars report even where the library asks for a disabled tqdm (it does
unless told to print).

openai-whisper's ``transcribe()`` keeps the segments it has finished in a
local list, ``all_segments``, made before its bar and only ever extended; a
bar made inside ``reporting(..., on_window=...)`` takes that list from its
caller and hands it to ``on_window`` before each report, so the segments of
each window are known as soon as it is decoded, not when the file is done.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from whisper_mcp.engines.base import ProgressCallback

# .callback: where this thread's decoding reports; .on_window: who reads the
# caller's finished segments (see the module's docstring).
_HOOKS = threading.local()
# The name of the list of finished segments in openai-whisper's transcribe().
SEGMENTS_LOCAL = "all_segments"

WindowCallback = Callable[[list[dict[str, Any]]], None]


class ProgressBar:
    """Stands in for ``tqdm.tqdm``: ``update(n)`` adds ``n`` done of ``total``
    (openai-whisper counts mel frames, faster-whisper seconds, or chunks when
    VAD-batched) and reports ``done / total``, at most 1."""

    def __init__(self, *_: object, total: float | None = None, **__: object) -> None:
        # Bound when the library makes the bar, inside the job's reporting() block.
        self._callback: ProgressCallback | None = getattr(_HOOKS, "callback", None)
        self._on_window: WindowCallback | None = getattr(_HOOKS, "on_window", None)
        self._segments: list[dict[str, Any]] | None = None
        if self._on_window is not None:
            found = sys._getframe(1).f_locals.get(SEGMENTS_LOCAL)
            self._segments = found if isinstance(found, list) else None
        self._total = float(total) if total and total > 0 else 1.0
        self._done = 0.0

    def update(self, n: float = 1) -> None:
        self._done += float(n)
        if self._on_window is not None and self._segments is not None:
            self._on_window(self._segments)
        if self._callback is not None:
            self._callback(min(self._done / self._total, 1.0))

    def close(self) -> None:
        return None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def reporting(callback: ProgressCallback | None, on_window: WindowCallback | None = None) -> Iterator[None]:
    """Bars made by this thread inside the block report to ``callback``, and
    show ``on_window`` their caller's finished segments first."""
    previous = getattr(_HOOKS, "callback", None), getattr(_HOOKS, "on_window", None)
    _HOOKS.callback, _HOOKS.on_window = callback, on_window
    try:
        yield
    finally:
        _HOOKS.callback, _HOOKS.on_window = previous


def install(module_name: str, *, calls_module: bool) -> None:
    """Make ``module_name`` build its progress bars from ``ProgressBar``.

    ``calls_module``: the library did ``import tqdm`` and calls
    ``tqdm.tqdm(...)`` (openai-whisper); otherwise it did ``from tqdm import
    tqdm`` (faster-whisper). Patches that one module's global only; the real
    tqdm elsewhere is untouched. Idempotent.
    """
    # importlib, not attribute access: whisper/__init__ rebinds the name
    # "transcribe" to the function, hiding the module of the same name.
    module = importlib.import_module(module_name)
    current = getattr(module, "tqdm", None)
    if current is ProgressBar or getattr(current, "tqdm", None) is ProgressBar:
        return
    module.tqdm = types.SimpleNamespace(tqdm=ProgressBar) if calls_module else ProgressBar  # type: ignore[attr-defined]


__all__ = ["ProgressBar", "install", "reporting"]
