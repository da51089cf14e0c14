"""End to end over real HTTP: a real server process, the real tiny.en model.

Only what needs the real model or the real process is here: the words it
hears, and answers staying fast while real inference holds the CPUs. The
routes' rules (validation, errors, ids, progress, ordering) are tested in
process over a fake engine in tests/unit/test_rest.py."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FIXTURES, LONG_AUDIO, ROOT, ServerProcess, wait_done, words

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


def test_readme_curl_walk_through(server: ServerProcess, tmp_path: Path) -> None:
    """The README's curl walk-through, run as written with the real curl, only
    pointed at this server: upload, a status that waits for the end, download."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## curl walk-through", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block in the README's curl walk-through"
    commands = [line for line in block.group(1).splitlines() if line.startswith("curl ")]
    assert len(commands) == 3, commands
    job_id = f"readme-demo-{tmp_path.name[-12:]}"  # the same id as written, made unique per run
    outputs = []
    for command in commands:
        command = command.replace("http://127.0.0.1:8765", server.url).replace("readme-demo", job_id)
        done = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    submitted, status = json.loads(outputs[0]), json.loads(outputs[1])
    assert submitted["job_id"] == job_id and submitted["status"] in ("queued", "processing", "completed")
    assert status["status"] == "completed", status  # ?wait=50 answered when the job ended
    assert {"transcription", "model", "loaded", "friday"} <= words(status["transcript"])
    assert words(outputs[2]) == words(status["transcript"])
