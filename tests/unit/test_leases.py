"""Several replicas on one PostgreSQL queue: leases, fencing, reclaim,
cancels and wake-ups across replicas, and a claim race between processes.
Each "replica" is a JobQueue with its own database connection pool, on a
real PostgreSQL server; the race runs in separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.jobs import JobStatus, UploadRecord
from whisper_mcp.queue.manager import JobCancelled, JobQueue, LeaseLost
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.store import SQLJobStore, SQLUploadStore
from whisper_mcp.server.uploads import merge_range

from helpers import ROOT, request

Replica = Callable[..., JobQueue]


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "shared-storage")


@pytest.fixture
def replica(postgres_url: str, files: FileStore) -> Iterator[Replica]:
    """Makes replicas of one service: same database, same storage folder."""
    made: list[JobQueue] = []

    def make(name: str, lease_seconds: float = 30.0) -> JobQueue:
        queue = JobQueue(
            SQLJobStore(PostgresDatabase(postgres_url)), files, replica_id=name, lease_seconds=lease_seconds
        )
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def enqueue(queue: JobQueue, files: FileStore, job_id: str, **overrides: object) -> None:
    req = request(job_id, **overrides)
    files.audio_path(req.key).write_bytes(b"audio of " + job_id.encode())
    queue._store.add(req, time.time())  # the store directly: no upload to consume


def test_a_job_is_claimed_by_one_replica(replica: Replica, files: FileStore) -> None:
    a, b = replica("a"), replica("b")
    enqueue(a, files, "only")
    first = a.claim_next()
    assert first is not None and first.lease_owner == "a"
    assert b.claim_next() is None


def test_expired_lease_is_reclaimed_and_the_old_run_is_fenced_off(replica: Replica, files: FileStore) -> None:
    dead, survivor = replica("dead", lease_seconds=0.2), replica("survivor")
    enqueue(dead, files, "long")
    run = dead.claim_next()
    assert run is not None and run.attempts == 1
    time.sleep(0.4)  # "dead" stops renewing: its lease runs out
    assert survivor.reclaim_expired() == ["long"]
    rerun = survivor.claim_next()
    assert rerun is not None and rerun.attempts == 2 and rerun.lease_owner == "survivor"

    # The old run comes back to life: it cannot report, complete or fail the job.
    with pytest.raises(LeaseLost):
        dead.progress("long", 0.5)
    assert dead.complete(run, {"text": "stale"}, "en") == "lost"
    assert files.audio_path(run.key).exists()  # the new owner still needs it
    assert survivor.complete(rerun, {"text": "fresh", "language": "en"}, "en") == "completed"
    done = survivor.get("long")
    assert done is not None and done.status is JobStatus.COMPLETED and done.attempts == 2
    assert dead.fail(run, "late failure") == "lost"
    assert survivor.get("long").status is JobStatus.COMPLETED  # type: ignore[union-attr]


def test_a_starting_replica_leaves_live_replicas_jobs_alone(replica: Replica, files: FileStore) -> None:
    live = replica("live")
    enqueue(live, files, "running")
    job = live.claim_next()
    assert job is not None
    newcomer = replica("newcomer")
    assert newcomer.recover() == []
    assert newcomer.get("running").status is JobStatus.PROCESSING  # type: ignore[union-attr]
    assert files.audio_path(job.key).exists()
    assert live.complete(job, {"text": "ok"}, "en") == "completed"


def test_heartbeat_renews_the_lease_and_brings_cancels_from_any_replica(replica: Replica, files: FileStore) -> None:
    runner, front = replica("runner", lease_seconds=5.0), replica("front")
    enqueue(runner, files, "job")
    job = runner.claim_next()
    assert job is not None and job.lease_expires_at is not None
    time.sleep(0.05)
    runner.heartbeat()
    renewed = front.get("job")
    assert renewed is not None and renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > job.lease_expires_at
    assert front.cancel("job") == "requested"  # sent to a replica that does not run it
    assert front.get("job").cancel_requested  # type: ignore[union-attr]
    runner.heartbeat()
    with pytest.raises(JobCancelled):
        runner.progress("job", 0.5)
    assert runner.cancelled(job) == "cancelled"
    assert front.get("job").status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_a_cancelled_run_whose_replica_died_is_not_run_again(replica: Replica, files: FileStore) -> None:
    dead, other = replica("dead", lease_seconds=0.2), replica("other")
    enqueue(dead, files, "stop-me")
    assert dead.claim_next() is not None
    assert other.cancel("stop-me") == "requested"
    time.sleep(0.4)
    assert other.reclaim_expired() == []
    assert other.get("stop-me").status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert other.claim_next() is None


def test_changes_on_one_replica_wake_listeners_on_another(replica: Replica, files: FileStore) -> None:
    a, b = replica("a"), replica("b")
    seen = threading.Event()
    b.on_change(lambda job_id: seen.set() if job_id == "noticed" else None)
    time.sleep(0.3)  # b's LISTEN connection is up
    enqueue(a, files, "noticed")
    assert seen.wait(5), "no notification reached the other replica"


def test_each_due_callback_goes_to_one_replica(replica: Replica, files: FileStore) -> None:
    a, b = replica("a"), replica("b")
    enqueue(a, files, "cb", callback_url="http://127.0.0.1:9/hook")
    job = a.claim_next()
    assert job is not None
    a.complete(job, {"text": "x"}, "en")
    first, second = a.due_callbacks(), b.due_callbacks()
    assert [j.job_id for j in first] == ["cb"] and second == []
    a.record_callback("cb", delivered=False, gave_up=False, next_attempt_at=0.0, error="refused")
    assert [j.job_id for j in b.due_callbacks()] == ["cb"]  # the next attempt, by whoever asks


def test_chunk_ranges_from_many_writers_all_survive(postgres_url: str) -> None:
    uploads = SQLUploadStore(PostgresDatabase(postgres_url))
    try:
        now = time.time()
        uploads.create(UploadRecord("u1", "chunked", None, None, 64 * 100, None, None, [], "open", now, now + 600))
        start = threading.Barrier(8)

        def send(worker: int) -> None:
            start.wait()
            for i in range(worker, 100, 8):
                assert uploads.add_range("u1", i * 64, (i + 1) * 64, now + 600, merge_range) is not None

        threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        record = uploads.get("u1")
        assert record is not None and record.ranges == [(0, 6400)]
    finally:
        uploads.close()


CLAIMER = """
import json, sys
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.store import SQLJobStore
store = SQLJobStore(PostgresDatabase(sys.argv[1]))
claimed = []
while (job := store.claim_next(sys.argv[2], 30.0, 0.0)) is not None:
    claimed.append(job.job_id)
print(json.dumps(claimed))
"""


def test_four_processes_claim_500_jobs_none_twice(postgres_url: str) -> None:
    store = SQLJobStore(PostgresDatabase(postgres_url))
    try:
        for i in range(500):
            store.add(request(f"job-{i:03d}"), float(i))
    finally:
        store.close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, postgres_url, f"claimer-{n}"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for n in range(4)
    ]
    claimed: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        claimed += json.loads(out)
    assert len(claimed) == 500
    assert len(set(claimed)) == 500
