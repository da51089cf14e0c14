"""Storage failing under the service, in the storage folder too. Data the
job database names but storage lacks is an error in words, never an empty
success: a completed job's transcript that is gone answers 500
``data_missing`` on the paths that read it (REST, MCP, a callback's body), and a queued job
whose audio is gone fails saying so. Audio that cannot be fetched for now
(a bucket that is away) sends its job back to the queue, uncounted. (A real
bucket that is away: tests/e2e/test_object_storage_e2e.py.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from whisper_mcp.errors import StorageUnavailable
from whisper_mcp.queue.files import FileStore, JobFiles
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import MAX_ATTEMPTS, JobQueue
from whisper_mcp.queue.sqlite import SQLiteJobStore
from whisper_mcp.server import worker as worker_module
from whisper_mcp.server.callbacks import CallbackSender
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.worker import InferenceWorker

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, queued, request, submit, wait_done


@pytest.mark.anyio
async def test_a_transcript_gone_from_storage_is_an_error_in_words(
    fake_server: InProcessServer, fake_client: httpx.Client
) -> None:
    job_id = submit(fake_client, FIXTURES / "short.wav")["job_id"]
    assert wait_done(fake_client, job_id)["status"] == "completed"
    assert fake_client.get(f"/download/{job_id}").text  # there, then removed behind the server's back
    job = fake_server.service.queue.get(job_id)
    assert job is not None
    FileStore(fake_server.storage).result_path(job.key).unlink()

    for path in (f"/download/{job_id}", f"/download/{job_id}?format=srt", f"/status/{job_id}"):
        answer = fake_client.get(path)
        assert answer.status_code == 500, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "data_missing" and "transcript of job" in error["message"], error
        assert "not in storage" in error["message"] and "--storage-url" in error["message"]
    async with Client(f"{fake_server.url}/mcp") as mcp:
        with pytest.raises(ToolError, match="not in storage"):
            await mcp.call_tool("check_transcription_status", {"job_id": job_id})
    # A callback still due says so, rather than carrying an empty transcript.
    body = await fake_server.service.callbacks.payload(job)
    assert body["status"] == "completed" and "transcript" not in body and "not in storage" in body["error"]


def test_a_queued_job_whose_audio_is_gone_fails_saying_so(store: SQLiteJobStore, files: FileStore) -> None:
    queue = JobQueue(store, files)
    store.add(request("lost"), time.time())  # no audio file written
    worker = InferenceWorker(queue, FakeEngine(), "tiny.en", metrics=Metrics())
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while (job := queue.get("lost")) is not None and job.status is not JobStatus.FAILED:
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
    finally:
        worker.stop()
    assert job is not None and job.error is not None
    assert "audio is not in storage" in job.error and "submit the file again" in job.error, job.error


class AwayFor(FileStore):
    """The storage folder, with its audio unreachable for the first ``times``
    fetches, as a bucket that is away answers."""

    def __init__(self, root: Path, times: int) -> None:
        super().__init__(root)
        self.left = times

    def job_files(self, key: str, speakers: int) -> Iterator[JobFiles]:  # type: ignore[override]
        if self.left > 0:
            self.left -= 1
            raise StorageUnavailable("The object store is not available right now; try again later.")
        return super().job_files(key, speakers)


def test_audio_that_cannot_be_fetched_yet_puts_the_job_back_uncounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "_backoff", lambda failures: 0.01)
    files = AwayFor(tmp_path / "storage", times=MAX_ATTEMPTS + 2)  # more than MAX_ATTEMPTS: none may be counted
    store = SQLiteJobStore(files.database)
    queue = JobQueue(store, files)
    queued(store, files, "later")
    worker = InferenceWorker(queue, FakeEngine(), "tiny.en", metrics=Metrics())
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while (found := queue.get("later")) is not None and found.status is not JobStatus.COMPLETED:
            assert found.status is not JobStatus.FAILED and time.monotonic() < deadline, found
            time.sleep(0.01)
    finally:
        worker.stop()
        store.close()
    assert files.left == 0 and found is not None and found.attempts == 1, found


def test_heartbeats_while_the_bucket_is_away_log_no_traceback(
    store: SQLiteJobStore, files: FileStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking back expired runs asks the bucket whether a run's transcript was
    saved; while it is away every beat fails. The object store's own warning
    says so in words: the heartbeat adds no traceback a beat (a 5 s outage
    once wrote 15 of them on one replica)."""
    queue = JobQueue(store, files)
    beats = threading.Semaphore(0)

    def away() -> None:
        beats.release()
        raise StorageUnavailable("The object store is not available right now; try again later.")

    monkeypatch.setattr(queue, "heartbeat", away)
    worker = InferenceWorker(queue, FakeEngine(), "tiny.en", metrics=Metrics(), heartbeat_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="whisper_mcp"):
        worker.start()
        try:
            for _ in range(3):
                assert beats.acquire(timeout=10)
        finally:
            worker.stop()
    assert not [r.getMessage() for r in caplog.records if r.exc_info], caplog.text


@pytest.mark.anyio
async def test_a_callback_while_the_bucket_is_away_waits_without_a_traceback(
    store: SQLiteJobStore, files: FileStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completed job's callback carries its transcript, read from the
    bucket; while that is away the attempt waits (its lease runs out and it is
    tried again), said in words, like an attempt that waits for the database."""
    queue = JobQueue(store, files)
    queued(store, files, "called", callback_url="http://127.0.0.1:9/hook")
    job = queue.claim_next()
    assert job is not None
    queue.complete(job, {"text": "hello", "segments": []}, "en")

    def away(job: object) -> None:
        raise StorageUnavailable("The object store is not available right now; try again later.")

    monkeypatch.setattr(queue, "result", away)
    sender = CallbackSender(queue, public_url="http://lb", backoff=(1.0,))
    done = queue.get("called")
    assert done is not None
    with caplog.at_level(logging.INFO, logger="whisper_mcp"):
        async with httpx.AsyncClient() as client:
            await sender._deliver(client, done)
    assert not [r.getMessage() for r in caplog.records if r.exc_info], caplog.text
    assert "callback for job called: its attempt waits for the object store" in caplog.text
