"""End to end over real HTTP: a real server process, the real tiny.en model.

Only what needs the real model or the real process is here: the words it
hears, and answers staying fast while real inference holds the CPUs. The
routes' rules (validation, errors, ids, progress, ordering) are tested in
process over a fake engine in tests/unit/test_rest.py."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    assert health["model"] == "tiny.en" and "tiny.en" in health["loaded_models"]
    assert isinstance(health["queue_size"], int)


def test_upload_poll_download(client: httpx.Client, server: ServerProcess) -> None:
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

    # The real process logs one line per job event (its logging set up by serve) ...
    lines = [line for line in server.log().splitlines() if f"job {job['job_id']} " in line]
    events = [line.split(f"job {job['job_id']} ")[1].split()[0] for line in lines]
    # (An idle worker may log "started" before the service logs "queued"; the
    # order behind a busy worker is tested in tests/unit/test_metrics_logs.py.)
    assert sorted(events) == ["completed", "queued", "started"] and events[-1] == "completed", lines
    assert "model=tiny.en" in lines[-1] and "elapsed=" in lines[-1]
    # ... and its /metrics read the real model pool.
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    assert metrics[("whisper_mcp_jobs_finished_total", (("status", "completed"),))] >= 1
    assert metrics[("whisper_mcp_models_loaded", ())] >= 1
    assert metrics[("whisper_mcp_model_loads_total", (("event", "load"),))] >= 1


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
    assert {"planning", "meeting", "budget", "december"} <= words(record["transcript"])
