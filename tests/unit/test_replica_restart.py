"""A replica that restarts under the same ``--replica-id`` (a StatefulSet pod,
a restarted container whose host name and pid 1 are the same) on a shared
PostgreSQL queue: the jobs its previous process was running are taken over
when their leases run out, not renewed forever by the new process."""

from __future__ import annotations

import time
from pathlib import Path

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.store import SQLJobStore

from helpers import request


def test_a_restarted_replica_does_not_keep_its_dead_runs_alive(postgres_url: str, tmp_path: Path) -> None:
    files = FileStore(tmp_path / "shared-storage")

    def replica(name: str) -> JobQueue:
        return JobQueue(SQLJobStore(PostgresDatabase(postgres_url)), files, replica_id=name, lease_seconds=0.5)

    before = replica("pod-0")
    req = request("orphan")
    files.audio_path(req.key).write_bytes(b"audio")
    before._store.add(req, time.time())
    assert before.claim_next() is not None
    before.close()  # killed mid-run: nothing is recorded

    after = replica("pod-0")  # the same name, a new process
    try:
        assert after.recover() == []  # the lease is still running
        for _ in range(4):  # its heartbeat, beating for 1 s: twice the lease
            after.heartbeat()
            time.sleep(0.25)
        assert after.reclaim_expired() == ["orphan"]
        rerun = after.claim_next()
        assert rerun is not None and rerun.job_id == "orphan" and rerun.attempts == 2
        after.heartbeat()  # its own run it does renew
        assert after.get("orphan").status is JobStatus.PROCESSING  # type: ignore[union-attr]
        assert after.reclaim_expired() == []
    finally:
        after.close()
