"""glibc's heap, set for the server process: large blocks go back to the
system as soon as they are freed.

glibc serves an allocation of at least the mmap threshold (128 KiB) with a
mapping of its own, unmapped on free; but after such a block is freed it
raises the threshold to that block's size (up to 32 MiB), so the next ones of
that size come from the heap, and an arena keeps them once freed. The
encoder's activations and attention scores (tens of MB a window) and a
decoded recording are such blocks: each thread's arena (the inference thread,
language identification's) ended up holding its own set, and RSS after a job
stayed about 100 MB above what a fixed threshold leaves (bench/ section
memory). A fixed threshold turns that raising off.

Only where the process runs on glibc, and only where the environment does not
set ``MALLOC_MMAP_THRESHOLD_`` itself (glibc has read that at start-up).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
ENV = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(environ: Mapping[str, str]) -> int | None:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` bytes for this process;
    the threshold set, or None where nothing was set (not glibc, or ``ENV`` given)."""
    if ENV in environ:
        return None
    with contextlib.suppress(OSError, AttributeError):
        if ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
            return MMAP_THRESHOLD
    log.debug("heap left as it is: no glibc mallopt here")
    return None


def give_back_free_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``),
    after much was freed at once (a model, a tokenizer); nothing where the
    process does not run on glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


__all__ = ["ENV", "MMAP_THRESHOLD", "fix_mmap_threshold", "give_back_free_heap"]
