"""Which queued jobs the service runs together, through the real routes, queue
and worker over a fake engine that records its batches. That a batch gives
what one-by-one gives with the real model: tests/e2e/test_batch_e2e.py."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import httpx
import pytest

from whisper_mcp.logs import TextFormatter

from fakes import FakeEngine
from helpers import FIXTURES, LONG_AUDIO, InProcessServer, wait_done


def submit(client: httpx.Client, path: Path, **fields: str) -> str:
    with open(path, "rb") as f:
        response = client.post("/transcribe", files={"file": (path.name, f)}, data={"cache": "false", **fields})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def batch_count(client: httpx.Client) -> float:
    match = re.search(r"^whisper_mcp_batch_size_count (\S+)$", client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("batch_size", [4, 1])
def test_service_batches_jobs_queued_behind_each_other(
    tmp_path: Path, batch_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="whisper_mcp")
    engine = FakeEngine()
    engine.gate.clear()  # the first job holds the worker, so the rest wait in the queue together
    with InProcessServer.start(tmp_path / "storage", engine, batch_size=batch_size) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            blocker = submit(client, FIXTURES / "speech.wav")
            assert engine.started.wait(10)
            first = [submit(client, FIXTURES / "short.wav") for _ in range(5)]
            other = submit(client, FIXTURES / "short.wav", word_timestamps="true")  # other options: not in their batch
            urgent = submit(client, FIXTURES / "short.wav", priority="urgent")  # runs before them, alone
            long = submit(client, LONG_AUDIO)  # over one 30 s window: never batched
            beam = [submit(client, FIXTURES / "short.wav", beam_size="2") for _ in range(2)]  # beam search: one by one
            engine.gate.set()
            jobs = [blocker, *first, other, urgent, long, *beam]
            records = {job: wait_done(client, job, timeout=30) for job in jobs}
            assert all(r["status"] == "completed" for r in records.values()), records
            key_of = {job: srv.service.queue.get(job).key for job in jobs}  # type: ignore[union-attr]
            ran = [
                [next(job for job, key in key_of.items() if key == name) for name in batch] for batch in engine.batches
            ]
            started = {job: r["started_at"] for job, r in records.items()}
            if batch_size == 4:
                # Four of the five together, then the fifth (a batch never skips ahead of the others).
                assert ran == [[blocker], [urgent], first[:4], [first[4]], [other], [long], [beam[0]], [beam[1]]]
                assert len({started[j] for j in first[:4]}) == 1
                assert batch_count(client) == 1
                batch_lines = [
                    TextFormatter().format(r) for r in caplog.records if "batch=4" in TextFormatter().format(r)
                ]
                assert len(batch_lines) == 4 and all("started" in line for line in batch_lines), batch_lines
            else:
                assert ran == [[blocker], [urgent], *([j] for j in first), [other], [long], *([j] for j in beam)]
                assert len({started[j] for j in first}) == 5
                assert batch_count(client) == 0
                assert not any("batch=" in TextFormatter().format(r) for r in caplog.records)
            assert started[urgent] < min(started[j] for j in first)
            assert [sorted(started[j] for j in first)] == [[started[j] for j in first]]  # in queue order
            texts = {client.get(f"/download/{j}").text for j in first}
            assert texts == {"fake transcript of 2.4 seconds\n"}
            health = client.get("/health").json()
            assert health["processing"] is None and health["processing_jobs"] == []


class HeldBatches(FakeEngine):
    """Holds a batch of two or more jobs, before it runs, until ``batch_gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_gate = threading.Event()
        self.batch_running = threading.Event()

    def transcribe_batch(self, items, model, options):  # type: ignore[no-untyped-def]
        if len(items) > 1:
            self.batch_running.set()
            self.batch_gate.wait(30)
        return super().transcribe_batch(items, model, options)


def test_health_lists_every_job_of_a_running_batch(tmp_path: Path) -> None:
    engine = HeldBatches()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine, batch_size=4) as srv:
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                blocker = submit(client, FIXTURES / "speech.wav")
                assert engine.started.wait(10)
                batch = [submit(client, FIXTURES / "short.wav") for _ in range(3)]
                engine.gate.set()
                assert engine.batch_running.wait(10)
                assert wait_done(client, blocker)["status"] == "completed"
                health = client.get("/health").json()
                assert [p["job_id"] for p in health["processing_jobs"]] == batch
                assert health["processing"] == health["processing_jobs"][0] and health["queue_size"] == 0
                assert {client.get(f"/status/{job}").json()["status"] for job in batch} == {"processing"}
                engine.batch_gate.set()
                assert all(wait_done(client, job)["status"] == "completed" for job in batch)
                assert client.get("/health").json()["processing_jobs"] == []
        finally:
            engine.batch_gate.set()
