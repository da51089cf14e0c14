"""Crash and restart: a real server killed with SIGKILL, then started again on
the same storage; and stopped with SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e

LONG_WORDS = {
    "morning", "meeting", "release", "transcription", "budget", "finance", "december", "servers",
    "office", "thursday", "library", "customer", "languages", "party", "june", "river",
}  # fmt: skip
SHORT_WORDS = {"hello", "world", "testing"}
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}

# job id -> (fixture, expected words, how many of them must be heard, a phrase heard once per run)
JOBS = {
    "long-1": (LONG_AUDIO, LONG_WORDS, 10, "weekly planning"),
    "short-1": (FIXTURES / "short.wav", SHORT_WORDS, 3, "hello"),
    "speech-wav": (FIXTURES / "speech.wav", SPEECH_WORDS, 5, "friday"),
    "speech-flac": (FIXTURES / "speech.flac", SPEECH_WORDS, 5, "friday"),
}


def submit(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post("/transcribe", files={"file": (path.name, f)}, data={"cache": "false", **fields})


def wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/status/{job_id}").json()
        if record["status"] == status:
            return record
        assert record["status"] in ("queued", "processing"), record
        assert time.monotonic() < deadline, f"job {job_id} not {status} within {timeout}s: {record}"
        time.sleep(0.02)


def test_sigkill_during_transcription_loses_no_job(tmp_path: Path) -> None:
    """SIGKILL in the middle of the long job, with others waiting and one done:
    after a restart on the same storage every job completes exactly once, the
    done one is left untouched, and SIGTERM then stops the server cleanly."""
    storage = tmp_path / "storage"
    first = ServerProcess(storage, tmp_path / "first.log").start()
    second: ServerProcess | None = None
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            # One job that completes before the crash.
            assert submit(client, FIXTURES / "short.wav", job_id="done-1").status_code == 202
            done = wait_done(client, "done-1")
            assert done["status"] == "completed", done
            done_text = client.get("/download/done-1").text
            assert SHORT_WORDS <= words(done_text), done_text

            for job_id, (path, *_rest) in JOBS.items():
                response = submit(client, path, job_id=job_id)
                assert response.status_code == 202, response.text
            wait_status(client, "long-1", "processing")
            before = {job_id: client.get(f"/status/{job_id}").json() for job_id in JOBS}
        # Killed in the middle of the long job, with the others still waiting.
        first.kill()
        assert before["long-1"]["status"] == "processing", before
        assert before["long-1"]["attempts"] == 1
        for job_id in JOBS:
            if job_id != "long-1":
                assert before[job_id]["status"] == "queued", before[job_id]
                assert before[job_id]["attempts"] == 0

        restarted_at = time.time()
        second = ServerProcess(storage, tmp_path / "second.log").start()
        with httpx.Client(base_url=second.url, timeout=30) as client:
            # The job that had completed: untouched, not run again.
            assert client.get("/status/done-1").json() == done
            download = client.get("/download/done-1")
            assert download.status_code == 200 and download.text == done_text
            # The same upload under the same id is still the same job: answered, not rerun.
            again = submit(client, FIXTURES / "short.wav", job_id="done-1")
            assert again.status_code == 202, again.text
            assert again.json()["finished_at"] == done["finished_at"]
            assert submit(client, FIXTURES / "speech.wav", job_id="done-1").status_code == 409

            records = {job_id: wait_done(client, job_id, timeout=120) for job_id in JOBS}
            downloads = {job_id: client.get(f"/download/{job_id}") for job_id in JOBS}
            assert client.get("/health").json()["queue_size"] == 0
            assert client.get("/status/done-1").json() == done

        for job_id, (_path, expected, needed, once) in JOBS.items():
            record = records[job_id]
            assert record["status"] == "completed", record
            heard = words(record["transcript"])
            assert len(expected & heard) >= needed, (job_id, record["transcript"])
            # The transcript of one run, not two runs appended.
            assert record["transcript"].lower().count(once) == 1, (job_id, record["transcript"])
            assert downloads[job_id].status_code == 200
            assert downloads[job_id].text == record["transcript"]
            assert record["created_at"] == before[job_id]["created_at"]
        assert records["long-1"]["attempts"] == 2, records["long-1"]
        assert all(records[j]["attempts"] == 1 for j in JOBS if j != "long-1"), records
        assert records["long-1"]["audio_seconds"] > 60

        # The interrupted job kept its place: it ran first after the restart, then the rest in order.
        starts = [records[job_id]["started_at"] for job_id in JOBS]
        assert starts == sorted(starts), records
        assert starts[0] > before["long-1"]["started_at"]
        assert starts[0] >= restarted_at

        # SIGTERM: an orderly shutdown (uvicorn re-raises the signal once done),
        # well before stop() would resort to SIGKILL.
        stopped_at = time.monotonic()
        second.stop()
        assert second.proc is not None and second.proc.returncode in (0, -signal.SIGTERM), second.proc.returncode
        assert time.monotonic() - stopped_at < 10
        assert "Application shutdown complete" in second.log(), second.log()[-2000:]

        first_log, second_log = first.log(), second.log()
        assert "re-queued 1 interrupted job(s): long-1" in second_log, second_log
        assert "job long-1 started" in first_log
        assert "job done-1 completed" in first_log
        assert "job done-1 started" not in second_log, second_log
        # Every job ran to completion exactly once, across both processes.
        for job_id in JOBS:
            assert f"job {job_id} completed" not in first_log, first_log
            assert second_log.count(f"job {job_id} completed") == 1, second_log
            assert second_log.count(f"job {job_id} started") == 1, second_log
        assert "attempt=2" in second_log

        # Nothing left behind: audio removed once done, one result per job, no half uploads.
        assert list((storage / "audio").iterdir()) == []
        assert len(list((storage / "results").glob("*.json"))) == len(JOBS) + 1
        assert list((storage / "results").glob("*.tmp")) == []
        assert list((storage / "incoming").iterdir()) == []
    finally:
        first.stop()
        if second is not None:
            second.stop()
