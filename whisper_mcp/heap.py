"""glibc's heap, set for the server process: one arena, and large blocks
kept for reuse while jobs run, handed back when the queue goes idle.

glibc gives each new thread an arena of its own (up to eight per core), and
serves an allocation of at least the mmap threshold with a mapping of its
own, unmapped on free (the threshold starts at 128 KiB and rises to the size
of the largest block freed, up to 32 MiB). The encoder's activations and
attention scores (tens of MB a window) and a decoded recording are such
blocks. Measured (bench/README.md, the heap settings): with several arenas,
each thread (inference, language identification) kept its own set, and RSS
after a job stayed about 100 MB above; with every block mapped afresh, the
kernel zeroed each page on first touch, a fifth of a job's CPU. One arena
and a fixed threshold of 32 MiB keep both down: the inference and
identification threads reuse one set of freed blocks, and the worker hands
the free pages back (``give_back_free_heap``) once the queue is idle.

Only where the process runs on glibc, and each setting only where the
environment does not set it (glibc has read that at start-up). Set before
the server starts its threads: a thread takes its arena at its first
allocation.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # the most glibc's own rising threshold reaches on 64-bit
ARENA_MAX = 1
ENV = "MALLOC_MMAP_THRESHOLD_"
ARENA_ENV = "MALLOC_ARENA_MAX"


def tune_heap(environ: Mapping[str, str], mallopt: Callable[[int, int], int] | None = None) -> dict[str, int]:
    """Set this process's heap as the module says (through glibc's
    ``mallopt`` unless one is given); the settings made, by environment name
    (none where the process does not run on glibc, or where the environment
    set them)."""
    made: dict[str, int] = {}
    with contextlib.suppress(OSError, AttributeError):
        set_option = mallopt or ctypes.CDLL("libc.so.6").mallopt
        for name, param, value in ((ENV, _M_MMAP_THRESHOLD, MMAP_THRESHOLD), (ARENA_ENV, _M_ARENA_MAX, ARENA_MAX)):
            if name not in environ and set_option(param, value) == 1:
                made[name] = value
    if not made:
        log.debug("heap left as it is: set by the environment, or no glibc mallopt here")
    return made


def give_back_free_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``),
    after much was freed at once (a model, a tokenizer) or when the work is
    done for now; nothing where the process does not run on glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


__all__ = ["ARENA_ENV", "ARENA_MAX", "ENV", "MMAP_THRESHOLD", "give_back_free_heap", "tune_heap"]
