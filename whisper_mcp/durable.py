"""Writing files so that a crash leaves the old version or the whole new one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def building_dir(target: Path, is_current: Callable[[], bool]) -> Iterator[Path]:
    """A temporary sibling of ``target`` to build a folder in; renamed into
    place when the block ends without error, so that readers see a whole
    folder or none, even if this process dies half-way or races another one.
    An outdated ``target`` is moved aside first and removed after; if another
    process published first and ``is_current()`` says its folder will do,
    that one stays. The temporary folder is removed in any case."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from other users
        fsync_dir(tmp)
        old = None
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_current():  # another process won the race
                raise
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
