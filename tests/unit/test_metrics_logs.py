"""/metrics in Prometheus format, and one structured log line per job event
(text and JSON), in process over a fake engine."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from whisper_mcp.logs import configure

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, submit, wait_done


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


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    """``logged(fmt)`` sets up logging as ``serve`` does; the root logger is
    restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def setup(fmt: str) -> None:
        configure("info", fmt)

    yield setup
    root.handlers[:] = handlers
    root.setLevel(level)


def test_metrics_move_as_jobs_run(fake_client: httpx.Client) -> None:
    before = scrape(fake_client)
    job = submit(fake_client, FIXTURES / "short.wav")
    assert wait_done(fake_client, job["job_id"])["status"] == "completed"
    refused = fake_client.post("/transcribe", files={"file": ("x.wav", b"not audio at all")})
    assert refused.status_code == 400
    after = scrape(fake_client)

    assert (
        value(after, "whisper_mcp_jobs_finished_total", status="completed")
        == value(before, "whisper_mcp_jobs_finished_total", status="completed") + 1
    )
    assert value(after, "whisper_mcp_audio_seconds_total") - value(
        before, "whisper_mcp_audio_seconds_total"
    ) == pytest.approx(job["audio_seconds"], abs=0.01)
    assert job["audio_seconds"] > 1
    assert (
        value(after, "whisper_mcp_processing_seconds_count")
        == value(before, "whisper_mcp_processing_seconds_count") + 1
    )
    assert value(after, "whisper_mcp_real_time_factor_count") == value(before, "whisper_mcp_real_time_factor_count") + 1
    assert value(after, "whisper_mcp_pickup_seconds_count") == value(before, "whisper_mcp_pickup_seconds_count") + 1
    assert (
        value(after, "whisper_mcp_upload_bytes_total") - value(before, "whisper_mcp_upload_bytes_total")
        == (FIXTURES / "short.wav").stat().st_size
    )
    assert (
        value(after, "whisper_mcp_errors_total", kind="invalid_audio")
        == value(before, "whisper_mcp_errors_total", kind="invalid_audio") + 1
    )
    assert value(after, "whisper_mcp_jobs", status="completed") == 1
    assert value(after, "whisper_mcp_queue_length") == 0
    assert value(after, "whisper_mcp_models_loaded") == 1
    assert value(after, "whisper_mcp_model_loads_total", event="load") == 1


def test_metrics_count_cancels_batches_and_queue(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv, srv.client() as client:
        running = submit(client, FIXTURES / "speech.wav")
        assert engine.started.wait(5)
        queued = [submit(client, FIXTURES / "short.wav") for _ in range(3)]
        doomed = submit(client, FIXTURES / "short.wav", priority="low")
        assert value(scrape(client), "whisper_mcp_queue_length") == 4
        assert client.delete(f"/jobs/{doomed['job_id']}").json()["status"] == "cancelled"
        engine.gate.set()
        for job in [running, *queued]:
            assert wait_done(client, job["job_id"])["status"] == "completed"
        after = scrape(client)
    assert value(after, "whisper_mcp_jobs_finished_total", status="cancelled") == 1
    assert value(after, "whisper_mcp_jobs_finished_total", status="completed") == 4
    assert value(after, "whisper_mcp_jobs", status="cancelled") == 1
    # The three short jobs queued together ran as one batch.
    assert value(after, "whisper_mcp_batch_size_count") == 1 and value(after, "whisper_mcp_batch_size_sum") == 3
    assert engine.batches[-1] and len(engine.batches[-1]) == 3


def job_lines(text: str, job_id: str) -> list[str]:
    return [line for line in text.splitlines() if f"job {job_id} " in line]


def run_behind_a_held_job(
    srv: InProcessServer, client: httpx.Client, *, cancel_one: bool = False
) -> tuple[dict, dict | None]:
    """A job queued while another runs, so its "queued" line comes before its
    "started" one (a job taken at once may start before the service logs
    that it was queued); with ``cancel_one``, a second queued job is cancelled."""
    srv.engine.gate.clear()
    submit(client, FIXTURES / "speech.wav")
    assert srv.engine.started.wait(5)
    job = submit(client, FIXTURES / "short.wav")
    cancelled = None
    if cancel_one:
        cancelled = submit(client, FIXTURES / "short.wav", priority="low")
        assert client.delete(f"/jobs/{cancelled['job_id']}").json()["status"] == "cancelled"
    srv.engine.gate.set()
    wait_done(client, job["job_id"])
    return job, cancelled


def events_of(text: str, job_id: str) -> list[str]:
    return [line.split(f"job {job_id} ")[1].split()[0] for line in job_lines(text, job_id)]


def test_one_log_line_per_job_event(tmp_path: Path, logged, capsys: pytest.CaptureFixture[str]) -> None:
    logged("text")
    with InProcessServer.start(tmp_path / "storage") as srv, srv.client() as client:
        job, cancelled = run_behind_a_held_job(srv, client, cancel_one=True)
    assert cancelled is not None
    err = capsys.readouterr().err
    lines = job_lines(err, job["job_id"])
    assert events_of(err, job["job_id"]) == ["queued", "started", "completed"], lines
    assert " INFO whisper_mcp.queue: " in lines[0]  # the queue, which owns the transition, logs it
    completed = lines[-1]
    assert "model=tiny.en" in completed and "audio_seconds=" in completed and "elapsed=" in completed
    assert events_of(err, cancelled["job_id"]) == ["queued", "cancelled"], err
    assert "state=queued" in job_lines(err, cancelled["job_id"])[-1]


def test_json_logs(tmp_path: Path, logged, capsys: pytest.CaptureFixture[str]) -> None:
    logged("json")
    # Jobs that take a little while, so their elapsed time is more than 0.
    with InProcessServer.start(tmp_path / "storage", FakeEngine(window_seconds=0.01)) as srv, srv.client() as client:
        job, _ = run_behind_a_held_job(srv, client)
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) == len([line for line in lines if line.strip()])  # every line is JSON
    events = [r for r in records if r.get("job_id") == job["job_id"]]
    assert [e["event"] for e in events] == ["queued", "started", "completed"]
    assert events[-1]["model"] == "tiny.en" and events[-1]["elapsed"] > 0 and events[-1]["audio_seconds"] > 2
    assert events[-1]["message"] == f"job {job['job_id']} completed"
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
