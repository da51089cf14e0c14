"""Two replicas in process (the real app over a fake engine) that share only
PostgreSQL and a bucket on a real S3-compatible server (SeaweedFS), each with
its own local folder: a job with known speakers submitted to one is run by
the other with the recordings the first stored, and either answers for it.
(Real replicas and the real model: tests/e2e/test_object_storage_e2e.py.)"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from whisper_mcp.diarization.references import read_reference
from whisper_mcp.queue.files import new_key

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, wait_done
from s3 import SeaweedFS

pytestmark = pytest.mark.slow

REFERENCE = "data:audio/wav;base64," + base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()


def test_known_speakers_stored_by_one_replica_are_heard_by_another(
    postgres_url: str, seaweedfs: SeaweedFS, bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    shared = {"database_url": postgres_url, "storage_url": f"{bucket_url}/{new_key()}"}
    with InProcessServer.start(tmp_path / "a", FakeEngine(), replica_id="a", **shared) as a:
        a.service.worker.stop()  # a takes the upload and runs nothing
        with a.client() as http, open(FIXTURES / "speech.wav", "rb") as f:
            speakers = {"known_speaker_names[]": ["Ana", "Bo"], "known_speaker_references[]": [REFERENCE] * 2}
            answer = http.post("/transcribe", files={"file": f}, data={**speakers, "diarize": "true"})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        with InProcessServer.start(tmp_path / "b", FakeEngine(), replica_id="b", **shared) as b:
            with b.client() as http:
                done = wait_done(http, job_id)
            assert done["status"] == "completed", done
            (heard,) = b.engine.known_speakers  # b ran it, with the recordings a stored
            assert heard == [(name, read_reference(0, name, REFERENCE).wav) for name in ("Ana", "Bo")]
            with a.client() as http:
                assert http.get(f"/download/{job_id}").text == done["transcript"]
            bucket = b.service.queue.files
            # The recordings go with the audio a moment after the job ended; the folders hold scratch only.
            deadline = time.monotonic() + 10
            while left := bucket._list("speakers") + bucket._list("audio"):  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, left
                time.sleep(0.05)
    for folder in (tmp_path / "a", tmp_path / "b"):
        assert [p for p in folder.rglob("*") if p.is_file()] == []
