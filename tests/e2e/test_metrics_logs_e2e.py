"""/metrics in Prometheus format, and one structured log line per job event."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FIXTURES, ServerProcess, wait_done

pytestmark = pytest.mark.e2e


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_jobs_run(client: httpx.Client) -> None:
    before = scrape(client)
    with open(FIXTURES / "short.wav", "rb") as f:
        job = client.post("/transcribe", files={"file": ("short.wav", f)}, data={"cache": "false"}).json()
    assert wait_done(client, job["job_id"])["status"] == "completed"
    client.post("/transcribe", files={"file": ("x.wav", b"not audio at all")})
    after = scrape(client)

    assert value(after, "whisper_mcp_jobs_finished_total", status="completed") == value(
        before, "whisper_mcp_jobs_finished_total", status="completed"
    ) + 1
    assert value(after, "whisper_mcp_audio_seconds_total") - value(before, "whisper_mcp_audio_seconds_total") == pytest.approx(
        job["audio_seconds"], abs=0.01
    )
    assert value(after, "whisper_mcp_processing_seconds_count") == value(before, "whisper_mcp_processing_seconds_count") + 1
    assert value(after, "whisper_mcp_real_time_factor_count") == value(before, "whisper_mcp_real_time_factor_count") + 1
    assert value(after, "whisper_mcp_pickup_seconds_count") >= value(before, "whisper_mcp_pickup_seconds_count") + 1
    assert value(after, "whisper_mcp_upload_bytes_total") - value(before, "whisper_mcp_upload_bytes_total") == (
        FIXTURES / "short.wav"
    ).stat().st_size
    assert value(after, "whisper_mcp_errors_total", kind="invalid_audio") == value(
        before, "whisper_mcp_errors_total", kind="invalid_audio"
    ) + 1
    assert value(after, "whisper_mcp_jobs", status="completed") >= 1
    assert value(after, "whisper_mcp_queue_length") >= 0
    assert value(after, "whisper_mcp_models_loaded") >= 1
    assert value(after, "whisper_mcp_model_loads_total", event="load") >= 1


def test_one_log_line_per_job_event(client: httpx.Client, server: ServerProcess) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        job = client.post("/transcribe", files={"file": ("short.wav", f)}, data={"cache": "false"}).json()
    wait_done(client, job["job_id"])
    lines = [line for line in server.log().splitlines() if f"job {job['job_id']} " in line]
    events = [line.split(f"job {job['job_id']} ")[1].split()[0] for line in lines]
    assert events == ["queued", "started", "completed"], lines
    completed = lines[-1]
    assert "model=tiny.en" in completed and "audio_seconds=" in completed and "elapsed=" in completed


def test_json_logs(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--log-format", "json").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client, open(FIXTURES / "short.wav", "rb") as f:
            job = client.post("/transcribe", files={"file": ("short.wav", f)}).json()
            wait_done(client, job["job_id"])
    finally:
        srv.stop()
    records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    events = [r for r in records if r.get("job_id") == job["job_id"]]
    assert [e["event"] for e in events] == ["queued", "started", "completed"]
    assert events[-1]["model"] == "tiny.en" and events[-1]["elapsed"] > 0 and events[-1]["audio_seconds"] > 2
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
