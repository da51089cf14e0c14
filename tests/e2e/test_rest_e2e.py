"""End to end over real HTTP: a real server process, the real tiny.en model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e

SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}


def submit(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post("/transcribe", files={"file": (path.name, f)}, data={"cache": "false", **fields})


def test_health_reports_loaded_model(client: httpx.Client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model_loaded"] is True
    assert health["model"] == "tiny.en"
    assert isinstance(health["queue_size"], int)


def test_upload_poll_download(client: httpx.Client) -> None:
    response = submit(client, FIXTURES / "speech.wav")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    record = wait_done(client, job["job_id"])
    assert record["status"] == "completed", record
    assert record["progress"] == 1.0
    heard = words(record["transcript"])
    assert len(SPEECH_WORDS & heard) >= 6, record["transcript"]

    download = client.get(f"/download/{job['job_id']}")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    assert download.text == record["transcript"]


@pytest.mark.parametrize(
    "name",
    ["speech_stereo_44k.wav", "speech_8k_u8.wav", "speech.mp3", "speech.flac", "speech.opus", "speech.m4a"],
)
def test_formats_transcribe(client: httpx.Client, name: str) -> None:
    response = submit(client, FIXTURES / name)
    assert response.status_code == 202, response.text
    record = wait_done(client, response.json()["job_id"])
    assert record["status"] == "completed", record
    assert len(SPEECH_WORDS & words(record["transcript"])) >= 5, (name, record["transcript"])


def test_short_24bit_48k_wav(client: httpx.Client) -> None:
    response = submit(client, FIXTURES / "short_48k_24bit.wav")
    assert response.status_code == 202, response.text
    record = wait_done(client, response.json()["job_id"])
    assert {"hello", "world", "testing"} <= words(record["transcript"]), record["transcript"]


def test_client_job_id_and_duplicates(client: httpx.Client) -> None:
    first = submit(client, FIXTURES / "short.wav", job_id="my-job.1")
    assert first.status_code == 202, first.text
    assert first.json()["job_id"] == "my-job.1"
    # The same audio under the same id is the same job, not a second one.
    again = submit(client, FIXTURES / "short.wav", job_id="my-job.1")
    assert again.status_code == 202
    assert again.json()["job_id"] == "my-job.1"
    other = submit(client, FIXTURES / "speech.wav", job_id="my-job.1")
    assert other.status_code == 409
    assert "already used" in other.json()["error"]["message"]
    assert wait_done(client, "my-job.1")["status"] == "completed"


@pytest.mark.parametrize(
    ("name", "fields", "status", "code", "phrase"),
    [
        ("not_audio.bin", {}, 400, "invalid_audio", "not a recognised audio format"),
        ("empty.wav", {}, 400, "invalid_audio", "empty"),
        ("truncated.wav", {}, 400, "invalid_audio", "truncated"),
        ("video_only.mp4", {}, 400, "invalid_audio", "no audio"),
        ("short.wav", {"model": "huge-v9"}, 400, "unknown_model", "tiny.en"),
        ("short.wav", {"language": "klingon"}, 400, "invalid_input", "language"),
        ("short.wav", {"language": "de"}, 400, "invalid_input", "English-only"),
        ("short.wav", {"job_id": "../../etc/passwd"}, 400, "invalid_input", "job_id"),
        ("short.wav", {"callback_url": "file:///etc/passwd"}, 400, "invalid_input", "callback_url"),
    ],
)
def test_bad_input_is_refused_clearly(
    client: httpx.Client, server: ServerProcess, name: str, fields: dict, status: int, code: str, phrase: str
) -> None:
    before = client.get("/health").json()["queue_size"]
    response = submit(client, FIXTURES / name, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert phrase.lower() in error["message"].lower()
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/health").json()["queue_size"] <= before
    # Nothing of a refused upload stays behind.
    assert list((server.storage / "incoming").iterdir()) == []


def test_no_file_and_wrong_content_type(client: httpx.Client) -> None:
    no_file = client.post("/transcribe", data={"model": "tiny.en"}, files={"other": ("x", b"y")})
    assert no_file.status_code == 400
    assert "'file'" in no_file.json()["error"]["message"]
    raw = client.post("/transcribe", content=b"RIFF....", headers={"content-type": "audio/wav"})
    assert raw.status_code == 400
    assert "multipart/form-data" in raw.json()["error"]["message"]


def test_unknown_job_and_route(client: httpx.Client) -> None:
    for path in ("/status/no-such-job", "/download/no-such-job"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert "error" in missing.json()


def test_download_before_done_is_404_with_reason(client: httpx.Client) -> None:
    job = submit(client, LONG_AUDIO).json()
    response = client.get(f"/download/{job['job_id']}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_ready"
    assert wait_done(client, job["job_id"], timeout=180)["status"] == "completed"


def test_health_stays_responsive_during_long_transcription(client: httpx.Client) -> None:
    job = submit(client, LONG_AUDIO).json()
    deadline = time.monotonic() + 60
    while client.get(f"/status/{job['job_id']}").json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    latencies: list[float] = []
    progress: list[float] = []
    while time.monotonic() < deadline + 120:
        started = time.perf_counter()
        health = client.get("/health")
        latencies.append(time.perf_counter() - started)
        assert health.status_code == 200
        status = client.get(f"/status/{job['job_id']}").json()
        if status["status"] != "processing":
            break
        progress.append(status["progress"])
        time.sleep(0.1)
    assert len(latencies) > 10
    assert max(latencies) < 0.5, latencies
    # progress is a real figure that moves forward while decoding
    assert any(0 < p < 1 for p in progress), progress
    assert progress == sorted(progress)
    record = wait_done(client, job["job_id"], timeout=180)
    assert record["status"] == "completed"
    assert record["audio_seconds"] > 60


def test_concurrent_submissions_all_complete_in_order(client: httpx.Client) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            r = submit(c, FIXTURES / "short.wav", job_id=f"concurrent-{i}")
            assert r.status_code == 202, r.text
            with lock:
                ids.append(r.json()["job_id"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [wait_done(client, job_id) for job_id in ids]
    assert all(r["status"] == "completed" for r in records)
    # Jobs run in arrival order: start times follow creation times.
    by_arrival = sorted(records, key=lambda r: r["created_at"])
    starts = [r["started_at"] for r in by_arrival]
    assert starts == sorted(starts)
