"""The REST routes in process: the real app, queue, worker and SQLite over a
fake engine. What the real model hears is tested in tests/e2e/test_rest_e2e.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from whisper_mcp.engines.audio import probe_audio

from fakes import FakeEngine
from helpers import FIXTURES, LONG_AUDIO, InProcessServer, wait_done, wait_status


def post(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post("/transcribe", files={"file": (path.name, f)}, data={"cache": "false", **fields})


def fake_text(path: Path) -> str:
    """The txt transcript the fake engine gives ``path``: its decoded duration."""
    return f"fake transcript of {probe_audio(path).duration:.1f} seconds\n"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[InProcessServer]:
    """A server whose jobs report 1 of 4 windows and then wait for ``engine.gate``."""
    engine = FakeEngine(windows=4, hold_from=2)
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        yield srv


def test_health_reports_loaded_model(fake_client: httpx.Client) -> None:
    health = fake_client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model_loaded"] is True and health["model_error"] is None
    assert health["model"] == "tiny.en" and health["loaded_models"] == ["tiny.en"]
    assert (health["engine"], health["device"]) == ("fake", "cpu")
    assert health["queue_size"] == 0 and health["processing"] is None


def test_upload_poll_download(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    response = post(fake_client, FIXTURES / "speech.wav")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["filename"] == "speech.wav"
    record = wait_done(fake_client, job["job_id"])
    assert record["status"] == "completed", record
    assert record["progress"] == 1.0
    assert record["transcript"] == fake_text(FIXTURES / "speech.wav")
    assert record["audio_seconds"] == pytest.approx(probe_audio(FIXTURES / "speech.wav").duration, abs=0.001)
    assert len(fake_server.engine.batches) == 1

    download = fake_client.get(f"/download/{job['job_id']}")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    assert download.text == record["transcript"]


@pytest.mark.parametrize(
    "name",
    [
        "speech_stereo_44k.wav",
        "speech_8k_u8.wav",
        "speech.mp3",
        "speech.flac",
        "speech.opus",
        "speech.m4a",
        "short_48k_24bit.wav",
    ],
)
def test_every_supported_format_is_accepted_and_runs(fake_client: httpx.Client, name: str) -> None:
    # tests/unit/test_audio.py checks each decodes to what speech.wav holds;
    # here, that an upload of each becomes a job with the audio's length.
    response = post(fake_client, FIXTURES / name)
    assert response.status_code == 202, response.text
    record = wait_done(fake_client, response.json()["job_id"])
    assert record["status"] == "completed", record
    assert record["audio_seconds"] == pytest.approx(probe_audio(FIXTURES / name).duration, abs=0.001)
    assert record["transcript"] == fake_text(FIXTURES / name)


def test_client_job_id_and_duplicates(fake_client: httpx.Client) -> None:
    first = post(fake_client, FIXTURES / "short.wav", job_id="my-job.1")
    assert first.status_code == 202, first.text
    assert first.json()["job_id"] == "my-job.1"
    # The same audio under the same id is the same job, not a second one.
    again = post(fake_client, FIXTURES / "short.wav", job_id="my-job.1")
    assert again.status_code == 202
    assert again.json()["job_id"] == "my-job.1"
    other = post(fake_client, FIXTURES / "speech.wav", job_id="my-job.1")
    assert other.status_code == 409
    assert "already used" in other.json()["error"]["message"]
    assert wait_done(fake_client, "my-job.1")["status"] == "completed"
    assert fake_client.get("/jobs").json()["total"] == 1


@pytest.mark.parametrize(
    ("name", "fields", "status", "code", "phrase"),
    [
        ("not_audio.bin", {}, 400, "invalid_audio", "not a recognised audio format"),
        ("empty.wav", {}, 400, "invalid_audio", "empty"),
        ("truncated.wav", {}, 400, "invalid_audio", "truncated"),
        ("video_only.mp4", {}, 400, "invalid_audio", "no audio"),
        ("short.wav", {"model": "huge-v9"}, 400, "unknown_model", "tiny.en"),
        ("short.wav", {"language": "klingon"}, 400, "invalid_input", "language"),
        ("short.wav", {"language": "de", "model": "tiny.en"}, 400, "invalid_input", "English-only"),
        ("short.wav", {"job_id": "../../etc/passwd"}, 400, "invalid_input", "job_id"),
        ("short.wav", {"callback_url": "file:///etc/passwd"}, 400, "invalid_input", "callback_url"),
    ],
)
def test_bad_input_is_refused_clearly(
    fake_client: httpx.Client,
    fake_server: InProcessServer,
    name: str,
    fields: dict,
    status: int,
    code: str,
    phrase: str,
) -> None:
    response = post(fake_client, FIXTURES / name, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert phrase.lower() in error["message"].lower()
    health = fake_client.get("/health").json()
    assert health["status"] == "ok" and health["queue_size"] == 0
    assert fake_client.get("/jobs").json()["total"] == 0
    # Nothing of a refused upload stays behind.
    assert list((fake_server.storage / "incoming").iterdir()) == []
    assert list((fake_server.storage / "audio").iterdir()) == []


def test_no_file_and_wrong_content_type(fake_client: httpx.Client) -> None:
    no_file = fake_client.post("/transcribe", data={"model": "tiny.en"}, files={"other": ("x", b"y")})
    assert no_file.status_code == 400
    assert "'file'" in no_file.json()["error"]["message"]
    raw = fake_client.post("/transcribe", content=b"RIFF....", headers={"content-type": "audio/wav"})
    assert raw.status_code == 400
    assert "multipart/form-data" in raw.json()["error"]["message"]


def test_unknown_job_and_route(fake_client: httpx.Client) -> None:
    for path in ("/status/no-such-job", "/download/no-such-job"):
        response = fake_client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    missing = fake_client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "http_404"
    assert "/nowhere" in missing.json()["error"]["message"]
    wrong_method = fake_client.put("/health")
    assert wrong_method.status_code == 405 and "PUT" in wrong_method.json()["error"]["message"]


def test_download_before_done_is_404_with_reason(held: InProcessServer) -> None:
    with held.client() as client:
        job = post(client, LONG_AUDIO).json()
        response = client.get(f"/download/{job['job_id']}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_ready"
        assert "no transcript" in response.json()["error"]["message"]
        held.engine.gate.set()
        assert wait_done(client, job["job_id"])["status"] == "completed"
        assert client.get(f"/download/{job['job_id']}").status_code == 200


def test_progress_of_a_running_job(held: InProcessServer) -> None:
    """Progress, ETA and the health panel while a job runs; the routes answer
    meanwhile. (That they stay fast under real inference: tests/e2e.)"""
    with held.client() as client:
        job = post(client, LONG_AUDIO).json()
        deadline = time.monotonic() + 10
        while (status := client.get(f"/status/{job['job_id']}").json())["progress"] != 0.25:
            assert time.monotonic() < deadline, status
            time.sleep(0.01)
        assert status["status"] == "processing" and status["cancel_requested"] is False
        assert status["eta_seconds"] is not None and status["eta_seconds"] >= 0
        health = client.get("/health").json()
        assert health["processing"] == {"job_id": job["job_id"], "progress": 0.25}
        assert health["processing_jobs"] == [health["processing"]]
        listed = client.get("/jobs").json()["jobs"]
        assert listed[0]["job_id"] == job["job_id"] and listed[0]["progress"] == 0.25

        held.engine.gate.set()
        progress = [0.25]
        while (status := client.get(f"/status/{job['job_id']}").json())["status"] == "processing":
            progress.append(status["progress"])
        assert progress == sorted(progress)
        assert status["status"] == "completed" and status["progress"] == 1.0
        assert status["audio_seconds"] > 60
        assert client.get("/health").json()["processing"] is None


def test_concurrent_submissions_all_complete_in_order(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        with fake_server.client() as c:
            r = post(c, FIXTURES / "short.wav", job_id=f"concurrent-{i}")
            assert r.status_code == 202, r.text
            with lock:
                ids.append(r.json()["job_id"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == [f"concurrent-{i}" for i in range(4)]
    records = [wait_done(fake_client, job_id) for job_id in ids]
    assert all(r["status"] == "completed" for r in records)
    # Jobs run in arrival order: start times follow creation times.
    by_arrival = sorted(records, key=lambda r: r["created_at"])
    starts = [r["started_at"] for r in by_arrival]
    assert starts == sorted(starts)


def test_status_of_a_queued_job_gives_its_place(held: InProcessServer) -> None:
    with held.client() as client:
        running = post(client, LONG_AUDIO).json()
        wait_status(client, running["job_id"], "processing")
        second = post(client, FIXTURES / "short.wav").json()
        assert second["queue_position"] == 1
        assert client.get(f"/status/{second['job_id']}").json()["queue_position"] == 1
        assert client.get(f"/jobs/{second['job_id']}").json()["status"] == "queued"
        assert client.get("/health").json()["queue_size"] == 1


def test_status_waits_for_the_job_with_wait(held: InProcessServer) -> None:
    """GET /status?wait=N answers when the job ends (or after N seconds), so a
    caller needs one request instead of a polling loop."""
    with held.client() as client:
        job = post(client, LONG_AUDIO).json()
        timer = threading.Timer(0.3, held.engine.gate.set)
        timer.start()
        try:
            record = client.get(f"/status/{job['job_id']}", params={"wait": "20"}, timeout=30).json()
        finally:
            timer.join()
        assert record["status"] == "completed" and record["transcript"]
        # A job that is still running answers after the wait, with its progress.
        held.engine.gate.clear()
        job = post(client, LONG_AUDIO).json()
        started = time.monotonic()
        record = client.get(f"/status/{job['job_id']}", params={"wait": "0.5"}).json()
        assert record["status"] in ("queued", "processing") and time.monotonic() - started >= 0.45
        held.engine.gate.set()
        for bad in ("soon", "-1", "nan", "51"):
            response = client.get(f"/status/{job['job_id']}", params={"wait": bad})
            assert response.status_code == 400, bad
            assert "wait must be a number of seconds from 0 to 50" in response.json()["error"]["message"]
        assert client.get("/status/not-a-job", params={"wait": "1"}).status_code == 404


def test_health_queue_size_follows_every_change_at_once(held: InProcessServer) -> None:
    """/health reads the queue size from the database only now and then, but
    any job change this process makes shows in the next answer."""
    with held.client() as client:
        first = post(client, LONG_AUDIO).json()
        assert client.get("/health").json()["queue_size"] in (0, 1)
        deadline = time.monotonic() + 10
        while client.get(f"/status/{first['job_id']}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/health").json()["queue_size"] == 0
        second = post(client, LONG_AUDIO).json()
        assert client.get("/health").json()["queue_size"] == 1  # not the cached 0
        assert client.delete(f"/jobs/{second['job_id']}").status_code == 200
        assert client.get("/health").json()["queue_size"] == 0
        held.engine.gate.set()
