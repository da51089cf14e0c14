"""Writing files so that a crash leaves the old version or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename into it, a new file), so a crash
    cannot bring back the old entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` beside ``path``, flush it to disk, rename it over ``path``.

    ``sync=False`` keeps the rename (a reader sees the old file or the whole
    new one) but skips both fsyncs: for files a crash may lose, written often
    (on a network filesystem each fsync is a round trip)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. the disk is full: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)
