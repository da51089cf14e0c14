"""A running job's partial transcript on disk: the segments each attempt has
decoded so far, one JSON line per segment, appended as each window is
decoded. Bytes written grow with the transcript, not with its square, and a
reader that remembers how far it got (``PartialCursor``) parses only what was
appended since.

Nothing is fsynced: a partial transcript is a view, and the result is what a
crash must not lose. A last line cut short (a crash mid-append) has no
newline yet and reads as absent. Releases before this format rewrote each
attempt's whole list as one JSON array (``<key>.<n>.json``); such a file
still reads, so a job that an older process was running shows its segments.

``read`` merges the attempts of any source with an ``advance`` (``Attempt``):
the files here, or an object store's numbered objects (``objects.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

Segment = dict[str, object]


@dataclass
class Seen:
    """How far a reader has read one attempt's segments."""

    offset: int = 0  # bytes read up to the last whole line (a legacy file: its size when read; objects: how many)
    count: int = 0  # segments in them
    legacy: bool = False


class Attempt(Protocol):
    """Where one attempt's segments are, read on from where ``seen`` says."""

    @property
    def attempt(self) -> int: ...

    def advance(self, seen: Seen) -> list[Segment]:
        """The segments appended since ``seen``, which is moved past them."""
        ...


@dataclass(frozen=True)
class AttemptFiles:
    """Where one attempt's segments are: this format's file, and the older one's."""

    attempt: int
    lines: Path  # <key>.<n>.jsonl: one segment per line, appended
    legacy: Path  # <key>.<n>.json: the whole list, written by earlier releases

    def advance(self, seen: Seen) -> list[Segment]:
        return _advance(self, seen)


@dataclass
class PartialCursor:
    """How far one reader (a stream, a long poll) has read a job's partial
    transcript: the next read returns only segments it has not had yet."""

    sent: int = 0  # segments handed out
    seen: dict[int, Seen] = field(default_factory=dict)  # attempt -> how far its file was read


def append(path: Path, segments: Sequence[Mapping[str, object]]) -> None:
    """Append ``segments``, one line each. A failed write (a full disk) is
    cut back off, so the next append does not follow a torn line."""
    data = b"".join(json.dumps(dict(s), ensure_ascii=False).encode() + b"\n" for s in segments)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def read(files: Sequence[Attempt], cursor: PartialCursor) -> list[Segment]:
    """The segments after the first ``cursor.sent`` of the attempt in ``files``
    (latest first) that has decoded most, the latest on a tie: while a re-run
    has not caught up, the run before it shows. Advances ``cursor``."""
    best: tuple[int, Attempt, int, list[Segment]] | None = None  # count, files, first fresh index, fresh
    for f in files:
        seen = cursor.seen.setdefault(f.attempt, Seen())
        first = seen.count
        fresh = f.advance(seen)
        if best is None or seen.count > best[0]:
            best = (seen.count, f, first, fresh)
    if best is None or best[0] <= cursor.sent:
        return []
    count, f, first, fresh = best
    if first > cursor.sent:
        # This attempt's earlier segments were read while another one led: read them again.
        fresh, first = f.advance(Seen())[:count], 0
    out = fresh[cursor.sent - first :]
    cursor.sent = count
    return out


def _advance(f: AttemptFiles, seen: Seen) -> list[Segment]:
    """The segments appended to ``f`` since ``seen``, which is moved past them."""
    if not seen.legacy and seen.offset == 0 and not f.lines.exists() and f.legacy.exists():
        seen.legacy = True
    if seen.legacy:
        try:
            size = f.legacy.stat().st_size
        except FileNotFoundError:
            return []
        if size == seen.offset:
            return []
        found = _legacy(f.legacy)
        fresh = found[seen.count :]
        seen.offset, seen.count = size, max(seen.count, len(found))
        return fresh
    try:
        with open(f.lines, "rb") as file:
            file.seek(seen.offset)
            data = file.read()
    except FileNotFoundError:
        return []
    data = data[: data.rfind(b"\n") + 1]  # a line with no newline yet is not there
    seen.offset += len(data)
    fresh = parse(data)
    seen.count += len(fresh)
    return fresh


def parse(data: bytes) -> list[Segment]:
    """The segments of whole JSON lines (a line that does not parse is skipped)."""
    out = []
    for line in data.splitlines():
        try:
            segment = json.loads(line)
        except ValueError:
            continue
        if isinstance(segment, dict):
            out.append(segment)
    return out


def _legacy(path: Path) -> list[Segment]:
    try:
        found = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):  # none, or torn by a crash (not fsynced)
        return []
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


__all__ = ["Attempt", "AttemptFiles", "PartialCursor", "Seen", "Segment", "append", "parse", "read"]
