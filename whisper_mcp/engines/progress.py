"""Decoding progress from libraries that report it only to tqdm.

openai-whisper's ``transcribe()`` and faster-whisper's segment generator are
the only places that know how far decoding has got, and they tell nobody but a
tqdm bar, made from their module's global ``tqdm``. ``install`` replaces that
global with ``ProgressBar``; each bar reports the fraction done to the callback
its thread set with ``reporting``. The callback is per thread, so engines
decoding on different threads of one process never report each other's jobs.
The bars report even where the library asks for a disabled tqdm (it does
unless told to print).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import types
from collections.abc import Iterator

from whisper_mcp.engines.base import ProgressCallback

_HOOKS = threading.local()  # .callback: where this thread's decoding reports


class ProgressBar:
    """Stands in for ``tqdm.tqdm``: ``update(n)`` adds ``n`` done of ``total``
    (openai-whisper counts mel frames, faster-whisper seconds, or chunks when
    VAD-batched) and reports ``done / total``, at most 1."""

    def __init__(self, *_: object, total: float | None = None, **__: object) -> None:
        # Bound when the library makes the bar, inside the job's reporting() block.
        self._callback: ProgressCallback | None = getattr(_HOOKS, "callback", None)
        self._total = float(total) if total and total > 0 else 1.0
        self._done = 0.0

    def update(self, n: float = 1) -> None:
        self._done += float(n)
        if self._callback is not None:
            self._callback(min(self._done / self._total, 1.0))

    def close(self) -> None:
        return None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def reporting(callback: ProgressCallback | None) -> Iterator[None]:
    """Bars made by this thread inside the block report to ``callback``."""
    previous = getattr(_HOOKS, "callback", None)
    _HOOKS.callback = callback
    try:
        yield
    finally:
        _HOOKS.callback = previous


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
