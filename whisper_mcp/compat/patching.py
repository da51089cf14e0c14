"""The two progress patches both Whisper libraries take: their module's global
``tqdm`` (the only channel through which they report how far decoding has
got), and their ``pad_or_trim`` (called at the start of every 30 s window, so
that windows skipped as silence report too). Each patches one module's global
only, the real functions elsewhere untouched, and is idempotent.
``compat.faster_whisper`` and ``compat.openai_whisper`` say which modules.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from whisper_mcp.compat.hooks import Hook

# Set on what these patches install, so a second install sees the first.
_MARK = "whisper_mcp_patch"


def replace_tqdm(module: types.ModuleType, bar: Callable[..., Any], *, calls_module: bool) -> None:
    """Make ``module`` build its progress bars with ``bar``.

    ``calls_module``: the library did ``import tqdm`` and calls
    ``tqdm.tqdm(...)`` (openai-whisper); otherwise it did ``from tqdm import
    tqdm`` (faster-whisper).
    """
    current = getattr(module, "tqdm", None)
    if current is bar or getattr(current, _MARK, False):
        return
    # ``bar`` itself, not a wrapper: it may look at its caller's frame (compat.openai_whisper).
    module.tqdm = types.SimpleNamespace(tqdm=bar, **{_MARK: True}) if calls_module else bar  # type: ignore[attr-defined]


def report_windows(
    module: types.ModuleType,
    window_started: Callable[[int], None],
    window_frames: Callable[[int], int | None] | None = None,
) -> None:
    """Make ``module``'s ``pad_or_trim`` (called with each decoding window's
    features, frames last) call ``window_started(frames)`` first, and pad to
    ``window_frames(frames)`` where that says a length (None: the library's)."""
    original: Callable[..., Any] = module.pad_or_trim
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)  # its signature stays the library's: the hook's check reads it
    def pad_or_trim(array: Any, *args: Any, **kwargs: Any) -> Any:
        frames = int(array.shape[-1])
        window_started(frames)
        length = window_frames(frames) if window_frames is not None and not args and "length" not in kwargs else None
        if length is not None:
            return original(array, length, **kwargs)
        return original(array, *args, **kwargs)

    setattr(pad_or_trim, _MARK, True)
    module.pad_or_trim = pad_or_trim  # type: ignore[attr-defined]


def window_hook(module: str, fitted: bool = False) -> Hook:
    """The hook ``report_windows`` is for ``module``'s ``pad_or_trim``
    (``fitted``: whose windows may also be encoded shorter than 30 s)."""
    fits = "; short windows encoded at their length" if fitted else ""
    return Hook(
        "pad_or_trim",
        "progress and cancel through windows skipped as silence" + fits,
        (f"{module}:pad_or_trim(array, length)",),
        "a silent stretch reports no progress, and a cancel waits for the next speech"
        + ("; every window is encoded as 30 s" if fitted else ""),
    )


__all__ = ["replace_tqdm", "report_windows", "window_hook"]
