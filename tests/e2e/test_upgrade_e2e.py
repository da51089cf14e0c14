"""Upgrade: today's server started on a storage folder the first release left
behind when it was killed (tests/fixtures/releases/2955c63, made by that
release's own code): one finished job, one killed mid-transcription, two
queued."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from whisper_mcp.queue.migrations import SCHEMA_VERSION

from helpers import FIXTURES, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e

FIRST_RELEASE = FIXTURES / "releases" / "2955c63" / "storage"
SHORT_WORDS = {"hello", "world", "testing"}
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
# job id -> the status the first release left it in
INTERRUPTED = {
    "interrupted-opus": "processing",
    "queued-mp3": "queued",
    "queued-m4a": "queued",
}


def test_first_release_folder_runs_on_today_server(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    shutil.copytree(FIRST_RELEASE, storage)
    # Retention off: the folder's jobs ended when it was made, maybe long ago.
    server = ServerProcess(storage, tmp_path / "server.log", "--retention-days", "0")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # The job that finished under the first release: its transcript is
            # still there, in every format (the result file has the first
            # release's shape: no word timings, no language probability).
            done = client.get("/status/done-short").json()
            assert done["status"] == "completed", done
            download = client.get("/download/done-short")
            assert download.status_code == 200, download.text
            assert SHORT_WORDS <= words(download.text), download.text
            srt = client.get("/download/done-short", params={"format": "srt"})
            assert srt.status_code == 200 and "00:00:00,000 -->" in srt.text, srt.text
            # Its callback_url was accepted and never called by that release;
            # today's server says so rather than sending it now.
            assert done["callback"]["state"] == "failed", done
            assert "not sent" in done["callback"]["error"]

            # The interrupted jobs run again and complete with their own words.
            records = {job_id: wait_done(client, job_id, timeout=180) for job_id in INTERRUPTED}
            for job_id, record in records.items():
                assert record["status"] == "completed", record
                heard = words(record["transcript"])
                assert len(SPEECH_WORDS & heard) >= 5, (job_id, record["transcript"])
                assert record["transcript"].lower().count("friday") == 1, record["transcript"]
                download = client.get(f"/download/{job_id}")
                assert download.status_code == 200 and download.text.strip() == record["transcript"].strip(), (
                    download.text
                )
            # The one killed mid-run ran a second time; the queued ones once.
            assert records["interrupted-opus"]["attempts"] == 2
            assert records["queued-mp3"]["attempts"] == records["queued-m4a"]["attempts"] == 1
            assert records["queued-mp3"]["language"] == "en"

            # New work after the upgrade: queued behind nothing, done.
            with open(FIXTURES / "short.wav", "rb") as f:
                response = client.post(
                    "/transcribe", files={"file": ("short.wav", f)}, data={"job_id": "after-upgrade", "cache": "false"}
                )
            assert response.status_code == 202, response.text
            record = wait_done(client, "after-upgrade")
            assert record["status"] == "completed" and SHORT_WORDS <= words(record["transcript"]), record
            listed = client.get("/jobs").json()
            assert {"done-short", "after-upgrade", *INTERRUPTED} <= {j["job_id"] for j in listed["jobs"]}
    finally:
        server.stop()

    conn = sqlite3.connect(storage / "jobs.sqlite3")
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        seqs = dict(conn.execute("SELECT job_id, seq FROM jobs"))
    finally:
        conn.close()
    assert seqs["after-upgrade"] > max(seq for job_id, seq in seqs.items() if job_id != "after-upgrade")
