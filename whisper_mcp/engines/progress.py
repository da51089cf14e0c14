"""Decoding progress from libraries that report it only to tqdm.

openai-whisper's ``transcribe()`` and faster-whisper's segment generator are
the only places that know how far decoding has got, and they tell nobody but a
tqdm bar, made from their module's global ``tqdm``. The compat hooks
(``compat.faster_whisper``, ``compat.openai_whisper``) replace that global
with ``ProgressBar``; each bar reports the fraction done to the callback its
thread set with ``reporting``. The callback is per thread, so engines
decoding on different threads of one process never report each other's jobs.
The bars report even where the library asks for a disabled tqdm (it does
unless told to print).

openai-whisper's ``transcribe()`` keeps the segments it has finished in a
list, made before its bar and only ever extended; its bar is given that list
(``finished``), and a bar made inside ``reporting(..., on_window=...)`` hands
it to ``on_window`` before each report, so the segments of each window are
known as soon as it is decoded, not when the file is done.

Both libraries update their bar only after a window that produced text: a
window skipped as silence reports nothing, so a silent file would sit at 0
and never see a cancel. The hooks also wrap the library's ``pad_or_trim``,
called once at the start of every 30 s window, so each window start reports
too (``window_started``): the window before it, if it never updated the bar,
was skipped and counts as done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from whisper_mcp.engines.base import ProgressCallback

# .callback: where this thread's decoding reports; .bar: its latest bar;
# .on_window: who reads the finished segments (see the module's docstring).
_HOOKS = threading.local()

WindowCallback = Callable[[list[dict[str, Any]]], None]

# What one mel frame (10 ms) is in a bar's unit, for the units the libraries use.
_PER_FRAME = {"frames": 1.0, "seconds": 0.01}


class ProgressBar:
    """Stands in for ``tqdm.tqdm``: ``update(n)`` adds ``n`` done of ``total``
    (openai-whisper counts mel frames, faster-whisper seconds, or chunks when
    VAD-batched) and reports ``done / total``, at most 1. ``finished``: the
    library's list of finished segments, where it has one."""

    def __init__(
        self,
        *_: object,
        total: float | None = None,
        unit: str = "it",
        finished: list[dict[str, Any]] | None = None,
        **__: object,
    ) -> None:
        # Bound when the library makes the bar, inside the job's reporting() block.
        self._callback: ProgressCallback | None = getattr(_HOOKS, "callback", None)
        self._on_window: WindowCallback | None = getattr(_HOOKS, "on_window", None)
        self._segments: list[dict[str, Any]] | None = finished if self._on_window is not None else None
        self._total = float(total) if total and total > 0 else 1.0
        self._done = 0.0
        self._per_frame = _PER_FRAME.get(unit)
        self._pending = 0.0  # the window started last, until the bar is updated for it
        if self._callback is not None:
            _HOOKS.bar = self

    def update(self, n: float = 1) -> None:
        self._done += float(n)
        if self._on_window is not None and self._segments is not None:
            self._on_window(self._segments)
        self._pending = 0.0
        self.report()

    def window(self, frames: int) -> None:
        """A window of ``frames`` mel frames starts. If the last one never
        updated the bar, it was skipped as silence: the library moved on by
        its whole size (both libraries do exactly that)."""
        if self._per_frame is None:
            return self.report()
        self._done += self._pending
        self._pending = frames * self._per_frame
        self.report()
        return None

    def report(self) -> None:
        """Report the fraction done (again)."""
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
    show ``on_window`` the library's finished segments first."""
    previous = (getattr(_HOOKS, "callback", None), getattr(_HOOKS, "on_window", None), getattr(_HOOKS, "bar", None))
    _HOOKS.callback, _HOOKS.on_window, _HOOKS.bar = callback, on_window, None
    try:
        yield
    finally:
        _HOOKS.callback, _HOOKS.on_window, _HOOKS.bar = previous


def window_started(frames: int) -> None:
    """A decoding window of ``frames`` mel frames starts on this thread: report
    progress (and so let a cancel stop decoding) even if the window turns out
    silent. No-op outside a ``reporting`` block or before its bar exists."""
    bar: ProgressBar | None = getattr(_HOOKS, "bar", None)
    if bar is not None:
        bar.window(frames)


def check() -> None:
    """Report this thread's progress again, unchanged: a point where a cancel
    may stop decoding (e.g. before each fallback decode of one window)."""
    bar: ProgressBar | None = getattr(_HOOKS, "bar", None)
    if bar is not None:
        bar.report()


__all__ = ["ProgressBar", "check", "reporting", "window_started"]
