"""A running job's partial transcript on disk: appended one line per segment
(bytes written linear in the transcript), read from where each reader left
off, a torn last line absent, and the whole-list files of earlier releases
still read. Streams over these files: tests/unit/test_streaming.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.queue import partial
from whisper_mcp.queue.files import FileStore, StoredUpload, new_key
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.partial import PartialCursor
from whisper_mcp.queue.sqlite import SQLiteDatabase
from whisper_mcp.queue.store import SQLJobStore

from helpers import request


def segment(i: int) -> dict[str, object]:
    return {"id": i, "start": i * 2.0, "end": i * 2.0 + 2.0, "text": f"segment {i} of a long recording, spoken slowly"}


def texts(segments: list[dict[str, object]]) -> list[object]:
    return [s["text"] for s in segments]


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "storage")


@pytest.fixture
def running(files: FileStore) -> Iterator[tuple[JobQueue, str]]:
    """A queue on SQLite with job ``long`` claimed, as the worker holds it."""
    queue = JobQueue(SQLJobStore(SQLiteDatabase(files.database)), files)
    path = files.incoming / f"upload-{time.monotonic_ns()}"
    path.write_bytes(b"audio")
    queue.enqueue(StoredUpload(path, 5, hashlib.sha256(b"audio").hexdigest()), request("long"))
    claimed = queue.claim_next()
    assert claimed is not None and claimed.job_id == "long"
    yield queue, claimed.key
    queue.close()


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/<pid>/io")
def test_bytes_written_grow_linearly_with_the_segments(running: tuple[JobQueue, str], files: FileStore) -> None:
    queue, key = running
    count = 400
    before = written_bytes()
    for i in range(count):  # one segment per window, as a long recording decodes
        queue.segments("long", [segment(i)])
    written = written_bytes() - before
    # The whole list rewritten after each window wrote about count/2 times the file.
    size = sum(p.stat().st_size for p in files.partial_dir.iterdir())
    assert written <= 2 * size + 64 * 1024, (written, size)
    job = queue.get("long")
    assert job is not None and texts(queue.partial(job)) == texts([segment(i) for i in range(count)])


def test_a_reader_parses_only_what_was_appended_since(files: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    parsed: list[int] = []
    parse = partial.parse

    def counting(data: bytes) -> list[dict[str, object]]:
        parsed.append(len(data))
        return parse(data)

    monkeypatch.setattr(partial, "parse", counting)
    cursor = PartialCursor()
    files.append_partial(key, 1, [segment(i) for i in range(100)])
    assert texts(files.read_partial(key, 1, cursor)) == texts([segment(i) for i in range(100)])
    assert cursor.sent == 100
    assert files.read_partial(key, 1, cursor) == []  # nothing new: nothing parsed
    files.append_partial(key, 1, [segment(100)])
    assert texts(files.read_partial(key, 1, cursor)) == [segment(100)["text"]]
    line = len(json.dumps(segment(100)).encode()) + 1
    assert parsed[1:] == [0, line]  # the second read found nothing, the third one line
    assert cursor.sent == 101


def test_a_torn_last_line_reads_as_absent(files: FileStore) -> None:
    key = new_key()
    files.append_partial(key, 1, [segment(0), segment(1)])
    path = files.partial_files(key, 1)[0].lines
    whole = json.dumps(segment(2)).encode() + b"\n"
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a crash in the middle of an append
    cursor = PartialCursor()
    assert texts(files.read_partial(key, 1, cursor)) == texts([segment(0), segment(1)])
    assert texts(files.read_partial(key, 1)) == texts([segment(0), segment(1)])
    # A re-run starts a file of its own and shows once it has more.
    files.append_partial(key, 2, [segment(0), segment(1), segment(2)])
    assert texts(files.read_partial(key, 2, cursor)) == [segment(2)["text"]]


def test_a_failed_append_leaves_no_torn_line_and_its_segments_go_next(
    running: tuple[JobQueue, str], files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, key = running
    queue.segments("long", [segment(0)])
    write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        write(fd, bytes(data[:10]))  # part of it landed before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(partial.os, "write", full_disk)
    queue.segments("long", [segment(1)])  # best effort: the job goes on
    monkeypatch.setattr(partial.os, "write", write)
    path = files.partial_files(key, 1)[0].lines
    assert path.read_bytes().endswith(b"\n")
    queue.segments("long", [segment(2)])
    job = queue.get("long")
    assert job is not None and texts(queue.partial(job)) == texts([segment(0), segment(1), segment(2)])


def test_a_partial_file_of_an_earlier_release_still_reads(files: FileStore) -> None:
    """Releases before the append-only format wrote partial/<key>.<n>.json,
    the whole list, rewritten atomically after each window."""
    key = new_key()
    legacy = files.partial_dir / f"{key}.1.json"
    legacy.write_bytes(json.dumps([segment(0), segment(1)], ensure_ascii=False).encode())
    assert texts(files.read_partial(key, 1)) == texts([segment(0), segment(1)])
    # The re-run after the upgrade shows it until it has caught up, then its own.
    cursor = PartialCursor()
    assert texts(files.read_partial(key, 2, cursor)) == texts([segment(0), segment(1)])
    files.append_partial(key, 2, [segment(0), segment(1)])
    assert files.read_partial(key, 2, cursor) == []
    files.append_partial(key, 2, [segment(2)])
    assert texts(files.read_partial(key, 2, cursor)) == [segment(2)["text"]]
    # An old process still running the job (a rolling upgrade) rewrites its list: it reads on.
    legacy.write_bytes(json.dumps([segment(i) for i in range(5)]).encode())
    assert texts(files.read_partial(key, 2, cursor)) == texts([segment(3), segment(4)])
    # Torn by a crash (never fsynced): absent, as before.
    legacy.write_bytes(b'[{"id": 0, "te')
    assert files.read_partial(key, 1) == []
    (files.partial_dir / f"{key}.1.json.tmp").write_bytes(b"[")  # the old writer's temporary file
    files.discard_partial(key)
    assert list(files.partial_dir.iterdir()) == []


def test_a_reader_switching_to_a_re_run_gets_the_rest_from_it(files: FileStore) -> None:
    key = new_key()
    files.append_partial(key, 1, [segment(0), segment(1)])
    cursor = PartialCursor()
    assert len(files.read_partial(key, 2, cursor)) == 2
    files.append_partial(key, 2, [{"id": 0, "text": "A"}])
    assert files.read_partial(key, 2, cursor) == []  # the re-run has not caught up
    files.append_partial(key, 2, [{"id": 1, "text": "B"}, {"id": 2, "text": "C"}])
    # The re-run leads now: the segments after the two already had, from it.
    assert texts(files.read_partial(key, 2, cursor)) == ["C"]
    assert cursor.sent == 3
