"""Every use of openai-whisper's private code, written for openai-whisper 20250625.

``transcribe()`` is public, but it reports to nobody while it runs, and it
computes the features of the whole waveform itself. Patched in its module
(``whisper.transcribe``), process-wide and idempotent, each patch inert for
callers that don't use it:

* ``tqdm`` (``compat.patching``): the only channel through which it says how
  far it has got; progress, and so cancel, depend on it;
* ``pad_or_trim``: called at the start of each window, so that windows
  skipped as silence report too;
* ``log_mel_spectrogram``: takes our streamed features (``engines.mel``)
  instead of computing them from a waveform; anything else goes to the original;
* its local list ``all_segments``: the segments finished so far, read when
  it makes its bar, so each window's segments are known as soon as it is
  decoded. ``transcribe()`` has no callback or other public way to hand
  them out before it returns (``verbose=True`` only prints their text), so
  the bar reads the list from its caller's frame, once, and only when that
  caller is ``transcribe()`` itself;
* word timings' alignment code (``whisper.timing``'s numba functions
  ``dtw_cpu`` and ``backtrace``), compiled again with numba's on-disk cache:
  openai-whisper compiles it anew in every process, about 1.8 s of CPU on
  the first job that asks for word timings (0.35 s from the cache).

Without ``tqdm`` or ``log_mel_spectrogram`` the service does not start;
without the others a public path runs, listed in /health. openai-whisper
(and torch) are imported only by the functions here, never at import.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from whisper_mcp.compat.hooks import Check, Hook, Library
from whisper_mcp.compat.patching import replace_tqdm, report_windows, window_hook

log = logging.getLogger("whisper_mcp.compat")

MODULE = "whisper.transcribe"
_M = MODULE + ":"
TIMING = "whisper.timing"
SEGMENTS_LOCAL = "all_segments"

LIBRARY = Library(
    "openai-whisper",
    "20250625",
    (
        Hook("tqdm", "progress and cancel while a file decodes", (_M + "tqdm.tqdm",)),
        window_hook(MODULE),
        Hook(
            "log_mel_spectrogram",
            "features computed as the audio streams in, not from the whole waveform at once",
            (_M + "log_mel_spectrogram(audio, n_mels, padding, device)", _M + "transcribe[log_mel_spectrogram]"),
        ),
        Hook(
            SEGMENTS_LOCAL,
            "each window's segments as soon as it is decoded, for streams and partial transcripts",
            (_M + f"transcribe[{SEGMENTS_LOCAL}]",),
            "segments arrive when the whole file is done",
        ),
        Hook(
            "dtw_cpu",
            "word timings' alignment compiled once per machine, not once per process",
            (TIMING + ":dtw_cpu.py_func", TIMING + ":backtrace.py_func", TIMING + ":dtw[dtw_cpu]"),
            "the first job with word timings in each process compiles it (about 2 s)",
        ),
    ),
)


@functools.cache
def check() -> Check:
    """The hooks against the installed openai-whisper (imports it); once per process."""
    return LIBRARY.examine()


def install(bar: Callable[..., Any], window_started: Callable[[int], None], features: type) -> Check:
    """openai-whisper's bars built with ``bar`` (given ``finished=``, the list
    of finished segments, or None), ``window_started(frames)`` at each window,
    and ``transcribe()`` taking ``features`` (an ``engines.mel.Mel``) for
    audio. ``IncompatibleLibrary`` when a fatal hook's names are gone."""
    found = check()
    found.raise_if_fatal()
    found.log(log)
    module: Any = importlib.import_module(MODULE)  # not whisper.transcribe: the package rebinds that name
    replace_tqdm(
        module, _with_segments(bar, module.transcribe) if found.has(SEGMENTS_LOCAL) else bar, calls_module=True
    )
    if found.has("pad_or_trim"):
        report_windows(module, window_started)
    if not getattr(module.log_mel_spectrogram, "accepts_mel", False):
        module.log_mel_spectrogram = _precomputed_mel_or(module.log_mel_spectrogram, features)
    if found.has("dtw_cpu"):
        cache_word_alignment()
    return found


@functools.cache
def cache_word_alignment() -> bool:
    """``whisper.timing``'s numba functions compiled with numba's on-disk
    cache (beside openai-whisper's files, or numba's user cache folder where
    those are read-only); once per process. False where neither can be
    written: compiled in each process, as openai-whisper does."""
    import numba

    timing: Any = importlib.import_module(TIMING)
    try:
        backtrace = numba.jit(nopython=True, cache=True)(timing.backtrace.py_func)
        dtw_cpu = numba.jit(nopython=True, parallel=True, cache=True)(timing.dtw_cpu.py_func)
    except RuntimeError as exc:  # numba found no folder it may cache in
        log.info("word timings' alignment is compiled in each process: %s", exc)
        return False
    # dtw_cpu calls backtrace by its module name, so it is swapped first.
    timing.backtrace = backtrace
    timing.dtw_cpu = dtw_cpu
    return True


def _with_segments(bar: Callable[..., Any], transcribe: Callable[..., Any]) -> Callable[..., Any]:
    """``bar``, handed ``transcribe()``'s list of finished segments when it makes the bar."""
    code = transcribe.__code__

    def tqdm(*args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        finished = caller.f_locals.get(SEGMENTS_LOCAL) if caller.f_code is code else None
        return bar(*args, finished=finished if isinstance(finished, list) else None, **kwargs)

    return tqdm


def _precomputed_mel_or(log_mel_spectrogram: Callable[..., Any], features: type[Any]) -> Callable[..., Any]:
    """``log_mel_spectrogram`` that passes precomputed ``features`` through."""
    from whisper.audio import N_SAMPLES

    def log_mel_or_precomputed(audio: Any, n_mels: int = 80, padding: int = 0, device: Any = None) -> Any:
        if isinstance(audio, features):
            # transcribe() asks for exactly this: its model's n_mels, 30 s of padding.
            if n_mels != audio.n_mels or padding != N_SAMPLES:
                raise ValueError(f"features have {audio.n_mels} mels and 30 s padding; asked for {n_mels}, {padding}")
            return audio.mel if device is None else audio.mel.to(device)
        return log_mel_spectrogram(audio, n_mels, padding, device)

    log_mel_or_precomputed.accepts_mel = True  # type: ignore[attr-defined]
    return log_mel_or_precomputed


__all__ = ["LIBRARY", "SEGMENTS_LOCAL", "check", "install"]
