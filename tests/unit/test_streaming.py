"""Text as it is decoded, in process over a fake engine that decodes one
segment per window and can be let through one window at a time: the partial
transcript in a job's status, ``stream=true`` on /v1 through the official
SDK, ``GET /jobs/{id}/events``, MCP's progress messages, and the partial
segments kept on disk, one file per attempt. The real model's streams are
tested in tests/e2e/test_streaming_e2e.py."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from openai import OpenAI

from whisper_mcp.queue.files import FileStore, new_key
from whisper_mcp.queue.jobs import Job
from whisper_mcp.server.changes import JobChanges

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer

SPEECH = FIXTURES / "speech.wav"


@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[InProcessServer]:
    """Three windows of one segment each; the first runs freely, each later one
    waits for ``engine.steps.release()``."""
    engine = FakeEngine(windows=3, segments=3, hold_from=2)
    engine.steps = threading.Semaphore(0)
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        try:
            yield srv
        finally:
            engine.steps.release(10)  # never leave the worker waiting


def poll(client: httpx.Client, job_id: str, until: object, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/status/{job_id}").json()
        if until(record):  # type: ignore[operator]
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.02)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, dict]]:
    """(event name, data) per server-sent event; comments skipped."""
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: ") :])
            name = None


def test_partial_transcript_grows_while_the_job_runs(stepped: InProcessServer) -> None:
    engine = stepped.engine
    with stepped.client() as client:
        job = client.post("/transcribe", files={"file": ("s.wav", SPEECH.read_bytes())}).json()
        first = poll(client, job["job_id"], lambda r: r.get("segments_done") == 1)
        assert first["status"] == "processing"
        assert first["partial_transcript"].startswith("part 1 of fake transcript")
        engine.steps.release()
        second = poll(client, job["job_id"], lambda r: r.get("segments_done") == 2)
        assert second["partial_transcript"].startswith(first["partial_transcript"] + " part 2 of")
        engine.steps.release()
        done = poll(client, job["job_id"], lambda r: r["status"] == "completed")
    # The finished job shows its transcript, and its partial file is gone.
    assert "partial_transcript" not in done and done["transcript"].startswith(second["partial_transcript"])
    assert list((stepped.storage / "partial").iterdir()) == []


def test_sdk_stream_sends_deltas_before_the_job_ends(stepped: InProcessServer) -> None:
    engine = stepped.engine
    with OpenAI(base_url=f"{stepped.url}/v1", api_key="unused", max_retries=0, timeout=30) as api:
        with open(SPEECH, "rb") as f:
            stream = api.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        events = iter(stream)
        first = next(events)
        # The job is held at its second window: this delta came while it ran.
        assert first.type == "transcript.text.delta" and first.delta.startswith("part 1 of")
        with stepped.client() as client:
            job_id = stream.response.headers["x-whisper-job-id"]
            assert client.get(f"/status/{job_id}").json()["status"] == "processing"
        engine.steps.release(2)
        rest = list(events)
    deltas = [first.delta] + [e.delta for e in rest if e.type == "transcript.text.delta"]
    done = rest[-1]
    assert done.type == "transcript.text.done"
    assert len(deltas) == 3 and "".join(deltas) == done.text
    with stepped.client() as client:
        assert client.get(f"/download/{job_id}").text.strip() == done.text
    # No usage: OpenAI's schema has only token counts for this event.
    assert done.usage is None and done.logprobs is None


def test_stream_hang_up_cancels_the_job(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()  # the job stays running until the gate opens
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as client:
        with (
            open(SPEECH, "rb") as f,
            httpx.stream(
                "POST",
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("s.wav", f)},
                data={"stream": "true"},
                timeout=30,
            ) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            job_id = response.headers["x-whisper-job-id"]
            assert engine.started.wait(5)
        # Hung up while the job runs: the job is asked to stop ...
        poll(client, job_id, lambda r: r.get("cancel_requested"))
        engine.gate.set()
        # ... and stops at its next window.
        assert poll(client, job_id, lambda r: r["status"] != "processing")["status"] == "cancelled"


def test_events_follow_a_job_to_its_end(stepped: InProcessServer) -> None:
    engine = stepped.engine
    with stepped.client() as client:
        job = client.post("/transcribe", files={"file": ("s.wav", SPEECH.read_bytes())}).json()
        events: list[tuple[str | None, dict]] = []
        with client.stream("GET", f"/jobs/{job['job_id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for name, data in sse_events(response.iter_lines()):
                events.append((name, data))
                if name == "segment":
                    engine.steps.release()  # the next window, once this one's segment is seen
        assert client.get(f"/jobs/{'no-such-job'}/events").status_code == 404
    names = [name for name, _ in events]
    assert names[-1] == "status" and events[-1][1]["status"] == "completed"
    assert events[-1][1]["transcript"].startswith("part 1 of")
    segments = [data for name, data in events if name == "segment"]
    assert [s["id"] for s in segments] == [0, 1, 2]
    assert [s["text"].split(" of ")[0] for s in segments] == ["part 1", "part 2", "part 3"]
    progress = [data["progress"] for name, data in events if name == "progress"]
    assert progress == sorted(progress) and progress, events


def test_streams_and_long_polls_wake_only_for_their_own_job(stepped: InProcessServer) -> None:
    """Other jobs' changes (20 jobs queued and cancelled) do not wake the
    streams or a long poll of a running job: none reads its job again. Its
    own next window wakes them all, they read it once between them, and each
    stream gets just the new segment."""
    engine, service = stepped.engine, stepped.service
    reads: Counter[str] = Counter()
    get = service.queue.get

    def counting_get(job_id: str) -> Job | None:
        reads[job_id] += 1
        return get(job_id)

    service.queue.get = counting_get  # type: ignore[method-assign]
    streams = 8
    with stepped.client() as client:
        job_id = client.post("/transcribe", files={"file": ("s.wav", SPEECH.read_bytes())}).json()["job_id"]
        poll(client, job_id, lambda r: r.get("segments_done") == 1)
        events: list[queue.Queue[tuple[str | None, dict]]] = [queue.Queue() for _ in range(streams)]
        waited: list[dict] = []

        def follow(got: queue.Queue[tuple[str | None, dict]]) -> None:
            with stepped.client() as own, own.stream("GET", f"/jobs/{job_id}/events") as response:
                for item in sse_events(response.iter_lines()):
                    got.put(item)

        def long_poll() -> None:
            with stepped.client() as own:
                waited.append(own.get(f"/status/{job_id}", params={"wait": "20"}).json())

        threads = [threading.Thread(target=follow, args=(got,)) for got in events]
        threads.append(threading.Thread(target=long_poll))
        for thread in threads:
            thread.start()
        for got in events:
            assert got.get(timeout=10)[0] == "segment"  # the first snapshot: the segment so far
            assert got.get(timeout=10)[0] == "progress"
        deadline = time.monotonic() + 10
        while service._changes.waiting(job_id) < streams + 1:  # the long poll is waiting too
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # and has read its job
        before = reads[job_id]
        for _ in range(20):
            other = client.post("/transcribe", files={"file": ("o.wav", SPEECH.read_bytes())}).json()["job_id"]
            assert client.delete(f"/jobs/{other}").json()["status"] == "cancelled"
        time.sleep(0.3)  # time for any wake-up to read
        assert reads[job_id] == before
        engine.steps.release()  # the job's own next window (its segment, then its progress) wakes all
        for got in events:
            name, data = got.get(timeout=10)
            assert (name, data["id"]) == ("segment", 1)
            assert got.get(timeout=10)[0] == "progress"
        # Read for all of them at once: once per change, not once per follower.
        assert 1 <= reads[job_id] - before <= 3, reads[job_id] - before
        engine.steps.release()
        for thread in threads:
            thread.join(15)
    assert waited[0]["status"] == "completed"
    deadline = time.monotonic() + 5
    while service._changes.waiting():  # nothing left registered once all have ended
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.anyio
async def test_waiters_wake_once_per_burst_and_queued_ones_for_other_jobs() -> None:
    changes: JobChanges[None] = JobChanges(lambda: None, wake_interval=0.2, queue_interval=0.2)
    with changes.watch("running") as running, changes.watch("queued") as queued:
        queued.queued = True
        changes.changed("running")  # the first change wakes its job's waiters at once ...
        assert await running.wait(0.05)
        assert await queued.wait(0.05)  # ... and a queued job's (its place may have moved)
        assert running.clear() == 1
        queued.clear()
        started = time.monotonic()
        for _ in range(50):  # a burst (a window's segments): one wake for all, at the interval's end
            changes.changed("running")
        assert not await running.wait(0.05)
        assert await running.wait(1.0) and await queued.wait(1.0)
        assert time.monotonic() - started >= 0.15
        assert running.clear() == 51 and queued.changes == 2  # every change counted; the queued job's place once
        queued.clear()
        await asyncio.sleep(0.25)
        changes.changed("other")  # another job: the queued waiter hears it, the running one does not
        assert await queued.wait(0.05)
        assert not await running.wait(0.3)
    assert changes.waiting() == 0


def test_events_tell_the_queue_position(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as client:
        client.post("/transcribe", files={"file": ("a.wav", SPEECH.read_bytes())})
        assert engine.started.wait(5)
        queued = client.post("/transcribe", files={"file": ("b.wav", (FIXTURES / "short.wav").read_bytes())}).json()
        with client.stream("GET", f"/jobs/{queued['job_id']}/events") as response:
            events = sse_events(response.iter_lines())
            assert next(events) == ("queued", {"job_id": queued["job_id"], "status": "queued", "queue_position": 1})
            engine.gate.set()
            rest = list(events)
    assert rest[-1][0] == "status" and rest[-1][1]["status"] == "completed"


@pytest.mark.anyio
async def test_mcp_wait_shows_the_text_so_far(tmp_path: Path) -> None:
    engine = FakeEngine(windows=3, segments=3, hold_from=2)
    engine.steps = threading.Semaphore(0)
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        if message and "part 1 of" in message and engine.steps is not None:
            engine.steps.release(2)  # seen the first window's text: let the job finish

    audio = base64.b64encode(SPEECH.read_bytes()).decode()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        try:
            async with Client(f"{srv.url}/mcp") as client:
                queued = (await client.call_tool("transcribe_wav", {"audio_base64": audio})).structured_content
                job_id = queued["job_id"]
                # A wait that runs out while the job is held shows what was decoded.
                srv_status: dict = {}
                for _ in range(200):
                    srv_status = (
                        await client.call_tool("check_transcription_status", {"job_id": job_id, "wait_seconds": 0.1})
                    ).structured_content
                    if srv_status.get("segments_done"):
                        break
                assert srv_status["status"] == "processing", srv_status
                assert srv_status["partial_transcript"].startswith("part 1 of"), srv_status
                assert srv_status["segments_done"] == 1
                done = (
                    await client.call_tool(
                        "check_transcription_status",
                        {"job_id": job_id, "wait_seconds": 20},
                        progress_handler=on_progress,
                    )
                ).structured_content
        finally:
            engine.steps.release(10)
    assert done["status"] == "completed", done
    assert any(m and m.startswith("processing: part 1 of") for m in messages), messages


def test_partial_segments_are_kept_per_attempt(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "storage")
    key = new_key()
    assert files.read_partial(key, 1) == []
    files.append_partial(key, 1, [{"id": 0, "text": "a"}, {"id": 1, "text": "b"}])
    # A re-run shows the earlier run's segments until it has as many of its own.
    assert [s["text"] for s in files.read_partial(key, 2)] == ["a", "b"]
    files.append_partial(key, 2, [{"id": 0, "text": "A"}])
    assert [s["text"] for s in files.read_partial(key, 2)] == ["a", "b"]
    files.append_partial(key, 2, [{"id": 1, "text": "B"}])
    assert [s["text"] for s in files.read_partial(key, 2)] == ["A", "B"]
    # The old run, which lost the job, cannot write into the new run's file.
    files.append_partial(key, 1, [{"id": 2, "text": "z"}])
    lines = files.partial_files(key, 2)[0].lines.read_bytes().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["A", "B"]
    # (It has more now, so it shows again, as the longest.)
    assert [s["text"] for s in files.read_partial(key, 2)] == ["a", "b", "z"]
    files.discard_partial(key)
    assert list(files.partial_dir.iterdir()) == []
