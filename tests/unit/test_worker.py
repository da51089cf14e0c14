"""Which jobs the inference worker runs together: a real store and worker
thread, with a fake engine that records the batches it is given."""

from __future__ import annotations

import time

import pytest

from whisper_mcp.engines.base import BATCH_MAX_SECONDS
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.sqlite import SQLiteJobStore
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.worker import InferenceWorker

from fakes import FakeEngine
from helpers import queued


def run_queue(store: SQLiteJobStore, files: FileStore, batch_size: int) -> list[list[str]]:
    """Start a worker on what is queued; return the batches once all jobs ended."""
    engine = FakeEngine()
    worker = InferenceWorker(JobQueue(store, files), engine, "tiny.en", metrics=Metrics(), batch_size=batch_size)
    worker.start()
    deadline = time.monotonic() + 10
    while store.count(JobStatus.QUEUED) or store.count(JobStatus.PROCESSING):
        assert time.monotonic() < deadline, "worker did not finish"
        time.sleep(0.01)
    worker.stop()
    names = {job.key: job.job_id for job in store.list(status=None, limit=500, offset=0).jobs}
    return [[names[key] for key in batch] for batch in engine.batches]


def test_jobs_queued_together_run_in_batches_of_batch_size(store: SQLiteJobStore, files: FileStore) -> None:
    for i in range(5):
        queued(store, files, f"j{i}")
    assert run_queue(store, files, batch_size=3) == [["j0", "j1", "j2"], ["j3", "j4"]]
    assert all(store.get(f"j{i}").status is JobStatus.COMPLETED for i in range(5))  # type: ignore[union-attr]
    started = {store.get(f"j{i}").started_at for i in range(3)}  # type: ignore[union-attr]
    assert len(started) == 1  # one batch, one start


def test_a_batch_never_skips_ahead_in_the_queue(store: SQLiteJobStore, files: FileStore) -> None:
    queued(store, files, "a")
    queued(store, files, "b")
    queued(store, files, "words", options=TranscribeOptions(word_timestamps=True))  # other options
    queued(store, files, "c")
    queued(store, files, "long", duration=BATCH_MAX_SECONDS + 1)  # more than one window
    queued(store, files, "d")
    queued(store, files, "beam", options=TranscribeOptions(beam_size=2))  # beam search is not batched
    queued(store, files, "e")
    queued(store, files, "f", model="base")
    queued(store, files, "low", priority=2)
    queued(store, files, "g")
    assert run_queue(store, files, batch_size=8) == [
        ["a", "b"], ["words"], ["c"], ["long"], ["d"], ["beam"], ["e"], ["f"], ["g"], ["low"],
    ]  # fmt: skip


def test_batching_off_with_batch_size_1(store: SQLiteJobStore, files: FileStore) -> None:
    for i in range(3):
        queued(store, files, f"j{i}")
    assert run_queue(store, files, batch_size=1) == [["j0"], ["j1"], ["j2"]]


def test_jobs_run_again_after_a_crash_run_alone(store: SQLiteJobStore, files: FileStore) -> None:
    # A batch was running when the process died: each of its jobs runs alone
    # next time, so one file that kills the process cannot fail the others.
    for job_id in ("x", "y", "z"):
        queued(store, files, job_id)
    for job_id in ("x", "y"):
        assert store.claim(job_id, "replica-1", 30.0, time.time()) is not None
        store.requeue(job_id, 1)
    queued(store, files, "fresh1")
    queued(store, files, "fresh2")
    assert run_queue(store, files, batch_size=8) == [["x"], ["y"], ["z", "fresh1", "fresh2"]]


def test_cancelled_while_waiting_is_not_claimed(store: SQLiteJobStore, files: FileStore) -> None:
    for job_id in ("a", "b", "c"):
        queued(store, files, job_id)
    assert store.cancel_queued("b", time.time())
    assert run_queue(store, files, batch_size=8) == [["a", "c"]]
    assert store.get("b").status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_the_free_heap_is_handed_back_once_the_queue_is_empty(
    store: SQLiteJobStore, files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While jobs follow one another their freed blocks are reused (whisper_mcp.heap);
    # the pages go back to the system when no job is left, once.
    given_back: list[int] = []  # the jobs not yet ended, at each hand-back

    def give_back() -> None:
        given_back.append(store.count(JobStatus.QUEUED) + store.count(JobStatus.PROCESSING))

    monkeypatch.setattr("whisper_mcp.server.worker.give_back_free_heap", give_back)
    for i in range(3):
        queued(store, files, f"j{i}")
    worker = InferenceWorker(JobQueue(store, files), FakeEngine(), "tiny.en", metrics=Metrics())
    worker.start()
    deadline = time.monotonic() + 10
    while not given_back and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # idle on: no second hand-back
    worker.stop()
    assert given_back == [0]
