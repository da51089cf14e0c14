"""Hardening with the real model and real server processes: a near-silent
file still reports progress and stops on cancel, and graceful restarts in
the middle of a job do not use up its attempts."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers import LONG_AUDIO, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e

LONG_WORDS = {
    "morning", "meeting", "release", "transcription", "budget", "finance", "december", "servers",
    "office", "thursday", "library", "customer", "languages", "party", "june", "river",
}  # fmt: skip


def near_silence(path: Path, seconds: int) -> Path:
    """A 1 Hz tone far below speech level, 16 kHz mono: Whisper skips most
    windows of it as silence (and decodes some again and again)."""
    t = np.arange(16000 * seconds)
    samples = (np.sin(2 * np.pi * t / 16000) * 30).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return path


def row(storage: Path, job_id: str) -> tuple[str, float, int]:
    """The job's status, last recorded progress and attempts, read from the
    database of a stopped server (the API shows no progress once a job ended)."""
    with contextlib.closing(sqlite3.connect(storage / "jobs.sqlite3")) as db:
        status, progress, attempts = db.execute(
            "SELECT status, progress, attempts FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
    return status, float(progress), int(attempts)


def poll(client: httpx.Client, job_id: str, ok: object, what: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/status/{job_id}").json()
        if ok(record):  # type: ignore[operator]
            return record
        assert time.monotonic() < deadline, f"{what}: {record}"
        time.sleep(0.05)


def test_a_near_silent_file_is_skipped_with_vad_batching(tmp_path: Path) -> None:
    """Ten minutes of near-silence with VAD batching: voice detection finds no
    speech, nothing is decoded, the transcript is empty."""
    audio = near_silence(tmp_path / "silence.wav", 600)
    with ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--vad-batching") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with open(audio, "rb") as f:
                response = client.post("/transcribe", files={"file": ("silence.wav", f)}, data={"job_id": "quiet"})
            assert response.status_code == 202, response.text
            ended = wait_done(client, "quiet", timeout=120)
    assert ended["status"] == "completed" and ended["transcript"] == "", ended


def test_a_near_silent_file_reports_progress_and_stops_on_cancel(tmp_path: Path) -> None:
    """Ten minutes of near-silence, decoded window by window (the default):
    progress moves window by window, and a cancel stops the job within about
    a window, not at the end of the file."""
    audio = near_silence(tmp_path / "silence.wav", 600)
    with ServerProcess(tmp_path / "storage", tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with open(audio, "rb") as f:
                response = client.post("/transcribe", files={"file": ("silence.wav", f)}, data={"job_id": "quiet"})
            assert response.status_code == 202, response.text
            moving = poll(client, "quiet", lambda r: r["status"] == "processing" and r["progress"] > 0, "no progress")
            asked = time.monotonic()
            assert client.delete("/jobs/quiet").status_code == 200
            ended = wait_done(client, "quiet", timeout=120)
            took = time.monotonic() - asked
            assert ended["status"] == "cancelled", ended
            print(f"progress {moving['progress']} when cancelled; the cancel took {took:.1f} s")
    log = server.log()  # once stopped: every line written
    assert "job quiet cancelled" in log, log[-3000:]
    # Stopped within a few windows of the cancel (a window is 5 % of this file), not at its end.
    status, progress, attempts = row(tmp_path / "storage", "quiet")
    assert status == "cancelled" and progress <= moving["progress"] + 0.15, (progress, moving)


def test_three_graceful_restarts_during_a_job_do_not_fail_it(tmp_path: Path) -> None:
    """SIGTERM three times while the long job runs, restarting on the same
    storage each time: it goes back to the queue uncounted each time and
    completes with the right words on its one counted attempt."""
    storage = tmp_path / "storage"
    for restart in range(3):
        server = ServerProcess(storage, tmp_path / f"server-{restart}.log").start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                if restart == 0:
                    with open(LONG_AUDIO, "rb") as f:
                        sent = client.post(
                            "/transcribe",
                            files={"file": (LONG_AUDIO.name, f)},
                            data={"job_id": "long", "cache": "false"},
                        )
                    assert sent.status_code == 202, sent.text
                running = poll(client, "long", lambda r: r["status"] == "processing", "not started")
                assert running["attempts"] == 1, running
        finally:
            server.stop()  # SIGTERM
        assert server.proc is not None and server.proc.returncode in (0, -15), server.log()[-3000:]
        # Back in the queue, the attempt not counted.
        assert row(storage, "long") == ("queued", 0.0, 0), server.log()[-3000:]
    with ServerProcess(storage, tmp_path / "server-last.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            done = wait_done(client, "long", timeout=300)
    assert done["status"] == "completed", done
    assert done["attempts"] == 1, done
    assert len(LONG_WORDS & words(done["transcript"])) >= 10, done["transcript"]
