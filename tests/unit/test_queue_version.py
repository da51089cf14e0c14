"""JobQueue.version: what a reader caching the queued count keys it by
(/health). A write that may change which jobs are queued is under way before
it commits, so a count read meanwhile is never taken for current, even by a
caller that has already seen the write (a job's status) before it is announced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.sqlite import SQLiteJobStore

from helpers import request


def test_a_claim_is_under_way_while_it_commits_and_a_new_version_once_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    files = FileStore(tmp_path / "storage")
    queue = JobQueue(store, files)
    try:
        job = request("job-1")
        files.audio_path(job.key).write_bytes(b"audio")
        store.add(job, time.time())  # the store directly: no upload to consume
        seen: list[tuple[int, bool]] = []
        claim_next = store.claim_next
        monkeypatch.setattr(store, "claim_next", lambda *args: seen.append(queue.version) or claim_next(*args))
        version, writing = queue.version
        assert not writing
        assert queue.claim_next() is not None
        assert seen == [(version, True)]  # under way while the store wrote
        later, writing = queue.version
        assert not writing and later > version
    finally:
        queue.close()
