"""Unit tests for the job store, the file store and start-up recovery (no model, no server)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue import files as storage
from whisper_mcp.queue.files import FileStore, new_key
from whisper_mcp.queue.jobs import DuplicateJob, JobStatus
from whisper_mcp.queue.manager import MAX_ATTEMPTS, ORPHAN_GRACE_SECONDS, JobQueue
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.sqlite import SQLiteDatabase
from whisper_mcp.queue.store import SQLJobStore

from helpers import request

OWNER, LEASE = "replica-1", 30.0
# The lease of a claim whose process died: already run out, so any replica
# may take the job back (the only process on SQLite does so at start-up anyway).
GONE = -1.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def reopen(request: pytest.FixtureRequest, files: FileStore) -> Callable[[], SQLJobStore]:
    """Opens a store on this test's database, as a (re)started process does:
    a SQLite file in the storage folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return lambda: SQLJobStore(SQLiteDatabase(files.database))
    url = request.getfixturevalue("postgres_url")
    return lambda: SQLJobStore(PostgresDatabase(url))


@pytest.fixture
def store(reopen: Callable[[], SQLJobStore]) -> Iterator[SQLJobStore]:
    s = reopen()
    yield s
    s.close()


def age_past_grace(*paths: Path) -> None:
    old = time.time() - ORPHAN_GRACE_SECONDS - 60
    for path in paths:
        os.utime(path, (old, old))


def add_with_audio(store: SQLJobStore, files: FileStore, job_id: str, now: float = 1.0):
    req = request(job_id)
    files.audio_path(req.key).write_bytes(b"audio of " + job_id.encode())
    return store.add(req, now)


# -- the store, on SQLite and on PostgreSQL -------------------------------------------------------


def test_add_and_get(store: SQLJobStore) -> None:
    req = request("a", options=TranscribeOptions(language="en"), callback_url="http://127.0.0.1/cb", duration=2.25)
    job = store.add(req, 100.0)
    assert job.job_id == "a"
    assert job.key == req.key
    assert job.status is JobStatus.QUEUED
    assert (job.filename, job.model, job.options.language, job.callback_url) == (
        "a.wav",
        "tiny.en",
        "en",
        "http://127.0.0.1/cb",
    )
    assert (job.audio_sha256, job.audio_bytes, job.duration) == (req.audio_sha256, 1234, 2.25)
    assert job.created_at == 100.0
    assert (job.started_at, job.finished_at, job.error, job.detected_language) == (None, None, None, None)
    assert job.attempts == 0
    assert store.get("a") == job
    assert store.get("missing") is None


def test_duplicate_job_id_raises_with_existing_job(store: SQLJobStore) -> None:
    first = store.add(request("dup", audio_sha256="11" * 32), 1.0)
    with pytest.raises(DuplicateJob) as info:
        store.add(request("dup", audio_sha256="22" * 32), 2.0)
    assert info.value.existing == first
    assert info.value.existing.audio_sha256 == "11" * 32
    # The refused insert left nothing behind.
    assert store.count(JobStatus.QUEUED) == 1
    assert store.get("dup") == first


def test_claim_next_in_arrival_order(store: SQLJobStore) -> None:
    assert store.claim_next(OWNER, LEASE, 1.0) is None
    # Ids deliberately not in alphabetical order: seq, not job_id, decides.
    for job_id in ("c", "a", "b"):
        store.add(request(job_id), 1.0)
    claimed = []
    for i in range(3):
        job = store.claim_next(OWNER, LEASE, 10.0 + i)
        assert job is not None
        assert job.status is JobStatus.PROCESSING
        assert job.attempts == 1
        assert job.started_at == 10.0 + i
        assert store.get(job.job_id) == job
        claimed.append(job.job_id)
    assert claimed == ["c", "a", "b"]
    assert store.claim_next(OWNER, LEASE, 20.0) is None
    assert store.count(JobStatus.PROCESSING) == 3


def test_queued_lists_in_run_order_and_claim_takes_one(store: SQLJobStore) -> None:
    store.add(request("late"), 1.0)
    store.add(request("low", priority=2), 2.0)
    store.add(request("urgent", priority=0), 3.0)
    store.add(request("next"), 4.0)
    assert [j.job_id for j in store.queued(10)] == ["urgent", "late", "next", "low"]
    assert [j.job_id for j in store.queued(2)] == ["urgent", "late"]

    job = store.claim("next", OWNER, LEASE, 5.0)
    assert job is not None and job.status is JobStatus.PROCESSING and job.started_at == 5.0 and job.attempts == 1
    assert store.claim("next", OWNER, LEASE, 6.0) is None  # no longer queued
    assert store.cancel_queued("late", 6.0)
    assert store.claim("late", OWNER, LEASE, 7.0) is None  # cancelled meanwhile
    assert store.claim("missing", OWNER, LEASE, 7.0) is None
    assert [j.job_id for j in store.queued(10)] == ["urgent", "low"]


def test_claim_increments_attempts_after_requeue(store: SQLJobStore) -> None:
    store.add(request("x"), 1.0)
    assert store.claim_next(OWNER, LEASE, 2.0).attempts == 1  # type: ignore[union-attr]
    store.requeue("x", 1)
    requeued = store.get("x")
    assert requeued.status is JobStatus.QUEUED and requeued.started_at is None  # type: ignore[union-attr]
    assert store.claim_next(OWNER, LEASE, 3.0).attempts == 2  # type: ignore[union-attr]


def test_concurrent_claims_never_take_the_same_job(files: FileStore, reopen: Callable[[], SQLJobStore]) -> None:
    n = 200
    setup = reopen()
    for i in range(n):
        setup.add(request(f"job-{i}"), float(i))
    setup.close()

    stores = [reopen(), reopen()]
    claimed: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def claim_all(index: int) -> None:
        try:
            barrier.wait()
            while (job := stores[index].claim_next(OWNER, LEASE, 1.0)) is not None:
                claimed[index].append(job.job_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            stores[index].close()

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    everything = claimed[0] + claimed[1]
    assert len(everything) == n
    assert set(everything) == {f"job-{i}" for i in range(n)}  # no job claimed twice, none lost
    check = reopen()
    try:
        assert check.count(JobStatus.PROCESSING) == n
        assert all(check.get(f"job-{i}").attempts == 1 for i in range(n))  # type: ignore[union-attr]
    finally:
        check.close()


def test_complete_and_fail(store: SQLJobStore) -> None:
    store.add(request("ok"), 1.0)
    store.add(request("bad"), 1.0)
    store.claim_next(OWNER, LEASE, 2.0)
    store.claim_next(OWNER, LEASE, 3.0)
    store.complete("ok", 1, 5.0, "en")
    store.fail("bad", 1, 6.0, "audio stopped decoding")
    ok, bad = store.get("ok"), store.get("bad")
    assert ok is not None and bad is not None
    assert (ok.status, ok.finished_at, ok.detected_language, ok.error) == (JobStatus.COMPLETED, 5.0, "en", None)
    assert (bad.status, bad.finished_at, bad.error) == (JobStatus.FAILED, 6.0, "audio stopped decoding")
    assert ok.status.finished and bad.status.finished
    assert store.count(JobStatus.COMPLETED) == 1
    assert store.count(JobStatus.FAILED) == 1
    assert store.count(JobStatus.PROCESSING) == 0


def test_queue_position(store: SQLJobStore) -> None:
    jobs = [store.add(request(f"q{i}"), 1.0) for i in range(4)]
    assert [store.queue_position(j) for j in jobs] == [1, 2, 3, 4]
    store.claim_next(OWNER, LEASE, 2.0)  # q0 leaves the queue
    assert [store.queue_position(store.get(f"q{i}")) for i in range(1, 4)] == [1, 2, 3]  # type: ignore[arg-type]
    assert store.count(JobStatus.QUEUED) == 3


def test_data_survives_reopen(reopen: Callable[[], SQLJobStore]) -> None:
    first = reopen()
    job = first.add(request("durable"), 1.0)
    first.close()
    second = reopen()
    try:
        assert second.get("durable") == job
    finally:
        second.close()


# -- JobQueue.recover -------------------------------------------------------


def job_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, bool]]:
    """(event, job id, recovered) of the job events logged."""
    found = [getattr(r, "job_fields", None) for r in caplog.records]
    return [(f["event"], f["job_id"], bool(f.get("recovered"))) for f in found if f]


def test_recover_requeues_interrupted_job_keeping_its_place(
    store: SQLJobStore, files: FileStore, reopen: Callable[[], SQLJobStore]
) -> None:
    first = add_with_audio(store, files, "first")
    add_with_audio(store, files, "second")
    assert store.claim_next(OWNER, GONE, 2.0).job_id == "first"  # type: ignore[union-attr]
    add_with_audio(store, files, "third")
    store.close()  # the process dies

    restarted = reopen()
    try:
        assert JobQueue(restarted, files).recover() == ["first"]
        again = restarted.get("first")
        assert again is not None
        assert again.status is JobStatus.QUEUED
        assert again.started_at is None
        assert again.seq == first.seq
        assert restarted.queue_position(again) == 1
        assert files.audio_path(first.key).exists()  # the audio is still there to run it again
        order = [restarted.claim_next(OWNER, GONE, 3.0) for _ in range(3)]
        assert [j.job_id for j in order] == ["first", "second", "third"]  # type: ignore[union-attr]
        assert [j.attempts for j in order] == [2, 1, 1]  # type: ignore[union-attr]
        assert restarted.claim_next(OWNER, GONE, 4.0) is None
    finally:
        restarted.close()


def test_recover_completes_job_whose_result_was_written(
    store: SQLJobStore, files: FileStore, reopen: Callable[[], SQLJobStore], caplog: pytest.LogCaptureFixture
) -> None:
    job = add_with_audio(store, files, "written")
    store.claim_next(OWNER, GONE, 2.0)
    files.write_result(job.key, {"text": "hello world", "language": "en", "segments": []})
    store.close()  # died between writing the result and marking the job completed

    restarted = reopen()
    try:
        with caplog.at_level(logging.INFO, logger="whisper_mcp"):
            assert JobQueue(restarted, files).recover() == []
        # Its end is logged once, as every job's is (counting completions by log lines).
        assert job_events(caplog) == [("completed", "written", True)]
        done = restarted.get("written")
        assert done is not None
        assert done.status is JobStatus.COMPLETED
        assert done.detected_language == "en"
        assert done.finished_at is not None
        assert done.attempts == 1
        assert not files.audio_path(job.key).exists()
        assert files.read_result(job.key)["text"] == "hello world"  # type: ignore[index]
        assert restarted.claim_next(OWNER, GONE, 3.0) is None
    finally:
        restarted.close()


def test_recover_gives_up_after_max_attempts(
    store: SQLJobStore, files: FileStore, reopen: Callable[[], SQLJobStore], caplog: pytest.LogCaptureFixture
) -> None:
    job = add_with_audio(store, files, "poison")
    add_with_audio(store, files, "next")
    # The process dies while running it, again and again.
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = store.claim_next(OWNER, GONE, float(attempt))
        assert claimed is not None and claimed.job_id == "poison" and claimed.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert JobQueue(store, files).recover() == ["poison"]
    store.close()

    restarted = reopen()
    try:
        with caplog.at_level(logging.INFO, logger="whisper_mcp"):
            assert JobQueue(restarted, files).recover() == []
        assert job_events(caplog) == [("failed", "poison", True)]
        failed = restarted.get("poison")
        assert failed is not None
        assert failed.status is JobStatus.FAILED
        assert failed.finished_at is not None
        assert failed.error and f"{MAX_ATTEMPTS} times" in failed.error
        assert not files.audio_path(job.key).exists()
        # The queue moves on.
        assert restarted.claim_next(OWNER, GONE, 10.0).job_id == "next"  # type: ignore[union-attr]
    finally:
        restarted.close()


def test_recover_leaves_settled_jobs_alone(store: SQLJobStore, files: FileStore) -> None:
    add_with_audio(store, files, "finished")
    waiting = add_with_audio(store, files, "waiting")
    assert store.claim_next(OWNER, GONE, 1.0).job_id == "finished"  # type: ignore[union-attr]
    store.complete("finished", 1, 2.0, "en")
    before = {j: store.get(j) for j in ("finished", "waiting")}
    assert JobQueue(store, files).recover() == []
    assert {j: store.get(j) for j in ("finished", "waiting")} == before
    assert files.audio_path(waiting.key).exists()


def test_recover_empties_incoming(store: SQLJobStore, files: FileStore) -> None:
    files.incoming_file(2**20, 0).write(b"half an upload")
    (files.incoming / "upload-stray").write_bytes(b"x")
    (files.incoming / "nested").mkdir()
    (files.incoming / "nested" / "file").write_bytes(b"y")
    if store.db.shared:
        # Replicas share incoming/: what another replica may be receiving
        # right now stays; litter older than the grace goes.
        JobQueue(store, files).recover()
        assert len(list(files.incoming.iterdir())) == 3
        age_past_grace(*files.incoming.iterdir())
    JobQueue(store, files).recover()
    assert files.incoming.is_dir()
    assert list(files.incoming.iterdir()) == []


# -- FileStore --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "..", "", "/etc/passwd", "a/b", "x" * 32, "0" * 31, "0" * 33, "A" * 32, "0" * 31 + "\n", "0" * 32 + "/"],
)
def test_file_store_refuses_non_key_names(files: FileStore, name: str) -> None:
    with pytest.raises(ValueError):
        files.audio_path(name)
    with pytest.raises(ValueError):
        files.result_path(name)
    with pytest.raises(ValueError):
        files.write_result(name, {"text": "x"})


def test_file_store_paths_stay_inside_root(files: FileStore) -> None:
    key = new_key()
    assert files.audio_path(key).parent == files.audio_dir
    assert files.result_path(key) == files.results_dir / f"{key}.json"
    assert files.audio_dir.parent == files.root


def test_write_result_is_atomic(files: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    assert files.read_result(key) is None
    assert not files.has_result(key)
    files.write_result(key, {"text": "première version", "language": "fr"})
    assert files.has_result(key)
    assert files.read_result(key) == {"text": "première version", "language": "fr"}
    assert sorted(p.name for p in files.results_dir.iterdir()) == [f"{key}.json"]  # no .tmp left

    files.write_result(key, {"text": "second"})
    assert files.read_result(key) == {"text": "second"}
    assert sorted(p.name for p in files.results_dir.iterdir()) == [f"{key}.json"]

    # Dying before the rename leaves the previous complete result in place.
    def crash(*args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(OSError):
        files.write_result(key, {"text": "third"})
    monkeypatch.undo()
    assert files.read_result(key) == {"text": "second"}


def test_incoming_accept_discard(files: FileStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    sink = files.incoming_file(len(data), 0)
    for i in range(0, len(data), 1 << 20):
        sink.write(data[i : i + (1 << 20)])
    upload = sink.finish()
    assert upload.path.parent == files.incoming
    assert upload.size == len(data)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()
    key = new_key()
    target = files.accept(upload, key)
    assert target == files.audio_path(key)
    assert target.read_bytes() == data
    assert not upload.path.exists()
    files.discard(target)
    assert not target.exists()
    files.discard(target)  # already gone: no error


def test_recover_completes_a_written_result_even_on_the_last_attempt(store: SQLJobStore, files: FileStore) -> None:
    job = add_with_audio(store, files, "last-try")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        store.claim_next(OWNER, GONE, float(attempt))
        if attempt < MAX_ATTEMPTS:
            JobQueue(store, files).recover()
    # Died after writing the transcript, before marking the job completed.
    files.write_result(job.key, {"text": "done", "language": "en", "segments": []})
    assert JobQueue(store, files).recover() == []
    recovered = store.get("last-try")
    assert recovered is not None and recovered.status is JobStatus.COMPLETED


def test_recover_removes_orphaned_audio(store: SQLJobStore, files: FileStore) -> None:
    kept = add_with_audio(store, files, "queued")
    orphan = files.audio_path(new_key())  # accepted, then the process died before the insert
    orphan.write_bytes(b"RIFF")
    ended = add_with_audio(store, files, "ended")
    store.claim_next(OWNER, GONE, 1.0)  # "queued" is claimed first
    store.complete("queued", 1, 2.0, "en")
    store.claim_next(OWNER, GONE, 3.0)
    store.fail("ended", 1, 4.0, "boom")  # died before its audio was removed
    if store.db.shared:  # another replica may be storing its job right now: kept until old
        JobQueue(store, files).recover()
        assert orphan.exists() and files.audio_path(ended.key).exists() and files.audio_path(kept.key).exists()
        age_past_grace(orphan, files.audio_path(ended.key), files.audio_path(kept.key))
    JobQueue(store, files).recover()
    assert not orphan.exists()
    assert not files.audio_path(ended.key).exists()
    assert not files.audio_path(kept.key).exists()
    live = add_with_audio(store, files, "live")
    JobQueue(store, files).recover()
    assert files.audio_path(live.key).exists()


def test_cache_lookup_matches_audio_model_options_and_engine(store: SQLJobStore) -> None:
    store.add(request("done", engine="openai/float32"), 1.0)
    store.claim_next(OWNER, LEASE, 2.0)
    store.complete("done", 1, 3.0, "en")
    opts = TranscribeOptions()
    found = store.find_completed("ab" * 32, "tiny.en", opts, "openai/float32")
    assert found is not None and found.job_id == "done"
    assert store.find_completed("ab" * 32, "tiny.en", opts, "ctranslate2/int8") is None
    assert store.find_completed("ab" * 32, "base", opts, "openai/float32") is None
    assert store.find_completed("ab" * 32, "tiny.en", TranscribeOptions(word_timestamps=True), "openai/float32") is None


def test_a_live_session_is_kept_as_it_goes_and_completed_after_a_crash(
    store: SQLJobStore, files: FileStore, reopen: Callable[[], SQLJobStore]
) -> None:
    queue = JobQueue(store, files, replica_id=OWNER, lease_seconds=GONE)  # its lease: run out at the crash
    job = queue.start_live(request("live", audio_sha256="", audio_bytes=0, duration=0.0))
    assert (job.status, job.attempts, job.started_at is not None) == (JobStatus.PROCESSING, 1, True)
    assert store.claim_next(OWNER, LEASE, 2.0) is None  # no worker takes it
    said = {"id": 0, "start": 0.5, "end": 1.5, "text": "hello"}
    queue.live_utterance(job, said, {"text": "hello", "language": "en", "duration": 2.0, "segments": [said]})
    assert queue.partial(job) == [said]
    store.close()  # the process died mid-session

    restarted = reopen()
    try:
        assert JobQueue(restarted, files).recover() == []
        done = restarted.get("live")
        assert done is not None and done.status is JobStatus.COMPLETED
        assert files.read_result(job.key)["segments"] == [said]  # type: ignore[index]
    finally:
        restarted.close()


def test_a_run_is_not_shown_running_once_its_end_is_being_recorded(store: SQLJobStore, files: FileStore) -> None:
    """/health reads ``running()``: no reader may see a job running after
    /status read it completed, so the run is hidden before its end is stored;
    shown again if storing it failed."""
    queue = JobQueue(store, files)
    add_with_audio(store, files, "a")
    job = queue.claim_next()
    assert job is not None and [r.job_id for r in queue.running()] == ["a"]
    seen: list[list[str]] = []
    real_complete = store.complete

    def complete(*args: Any, **kwargs: Any) -> bool:
        seen.append([r.job_id for r in queue.running()])
        raise OSError("the database went away")

    store.complete = complete  # type: ignore[method-assign]
    with pytest.raises(OSError):
        queue.complete(job, {"text": "hello"}, "en")
    assert seen == [[]] and [r.job_id for r in queue.running()] == ["a"]
    store.complete = real_complete  # type: ignore[method-assign]
    assert queue.complete(job, {"text": "hello"}, "en") == "completed" and queue.running() == ()
