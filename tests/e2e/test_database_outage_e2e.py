"""The shared database going away under a real server (``serve
--database-url``, the real tiny.en model) on its own real PostgreSQL: first
stopped as an operator stops it, then hung (every process of it SIGSTOPped,
its connections open).

While it is away every route that needs it answers 503 in words within a
second (REST, /v1, MCP, /metrics, /health; /livez stays 200), an open event
stream ends with a final event that says so, and the log holds one line for
the outage's start and one for its end, no tracebacks. Once it is back the
worker resumes within seconds, and the jobs accepted before it went away
complete, once each.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from fastmcp import Client

from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.testing import PostgresCluster

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, submit, wait_done, wait_ready

pytestmark = pytest.mark.e2e

SHORT = FIXTURES / "short.wav"
# Every answer during an outage, however it is asked.
LIMIT = 1.0
OUTAGE_STARTS = "cannot be reached ("
OUTAGE_ENDS = "is reachable again, after"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this module's own: it is stopped and hung here."""
    if PostgresCluster.binaries() is None:
        pytest.skip("PostgreSQL is not installed; `make test` installs Debian's postgresql package")
    with PostgresCluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """long.mp3 three times over (3 min): still decoding well after the
    database is stopped, however fast the first windows went."""
    samples = np.concatenate([decode_audio(LONG_AUDIO)] * 3)
    path = tmp_path_factory.mktemp("audio") / "long_x3.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def server(cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("outage")
    extra = ("--database-url", cluster.database(), "--heartbeat-seconds", "1", "--threads", "1")
    with ServerProcess(root / "storage", root / "server.log", *extra) as srv:
        yield srv


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def every_route(http: httpx.Client, url: str, job_id: str) -> dict[str, tuple[int, str, float]]:
    """Each route that needs the database: (status, body, seconds)."""
    calls: dict[str, Callable[[], httpx.Response]] = {
        "GET /health": lambda: http.get("/health"),
        "GET /jobs": lambda: http.get("/jobs"),
        "GET /status": lambda: http.get(f"/status/{job_id}"),
        "GET /jobs/{id}": lambda: http.get(f"/jobs/{job_id}"),
        "GET /download": lambda: http.get(f"/download/{job_id}"),
        "GET /metrics": lambda: http.get("/metrics"),
        "GET /jobs/{id}/events": lambda: http.get(f"/jobs/{job_id}/events"),
        "DELETE /jobs/{id}": lambda: http.delete(f"/jobs/{job_id}"),
        "POST /transcribe": lambda: http.post(
            "/transcribe", files={"file": ("short.wav", SHORT.read_bytes())}, data={"cache": "false"}
        ),
        "POST /v1/audio/transcriptions": lambda: http.post(
            "/v1/audio/transcriptions", files={"file": ("short.wav", SHORT.read_bytes())}, data={"model": "whisper-1"}
        ),
    }
    answers = {}
    for name, call in calls.items():
        response, seconds = timed(call)
        answers[name] = (response.status_code, response.text, seconds)
    started = time.perf_counter()
    text = anyio.run(_mcp_status, url, job_id)
    answers["MCP check_transcription_status"] = (503, text, time.perf_counter() - started)
    return answers


async def _mcp_status(url: str, job_id: str) -> str:
    async with Client(f"{url}/mcp") as client:
        result = await client.call_tool("check_transcription_status", {"job_id": job_id}, raise_on_error=False)
        assert result.is_error
        return str(result.content[0].text)  # type: ignore[union-attr]


def assert_refused_in_words(answers: dict[str, tuple[int, str, float]]) -> None:
    for name, (status, body, seconds) in answers.items():
        assert status == 503, f"{name}: {status} {body}"
        assert "database" in body and "Try again" in body, f"{name}: {body}"
        assert seconds < LIMIT, f"{name} took {seconds:.2f} s"


def follow(url: str, job_id: str, events: list[tuple[float, str]]) -> threading.Thread:
    """Read the job's event stream on a thread: (when, each event's text)."""

    def read() -> None:
        with httpx.stream("GET", f"{url}/jobs/{job_id}/events", timeout=60) as response:
            assert response.status_code == 200
            block: list[str] = []
            for line in response.iter_lines():
                if line:
                    block.append(line)
                elif block:
                    events.append((time.monotonic(), "\n".join(block)))
                    block = []
        events.append((time.monotonic(), "closed"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def mcp_waiter(url: str, job_id: str, outcome: list[tuple[float, str]]) -> tuple[threading.Thread, threading.Event]:
    """check_transcription_status waiting for the job, on a thread: (when it
    answered, its error's text); the event is set once the MCP session is open
    (the server's first MCP request loads its MCP stack first)."""
    connected = threading.Event()

    async def call() -> None:
        async with Client(f"{url}/mcp") as client:
            connected.set()
            arguments = {"job_id": job_id, "wait_seconds": 60}
            result = await client.call_tool("check_transcription_status", arguments, raise_on_error=False)
            outcome.append((time.monotonic(), str(result.content[0].text) if result.is_error else "no error"))  # type: ignore[union-attr]

    thread = threading.Thread(target=anyio.run, args=(call,), daemon=True)
    thread.start()
    return thread, connected


def log_since(server: ServerProcess, mark: int) -> str:
    return server.log()[mark:]


def wait_for_log(server: ServerProcess, mark: int, text: str, timeout: float) -> float:
    """Seconds until ``text`` is in the log past ``mark``."""
    started = time.monotonic()
    while text not in log_since(server, mark):
        assert time.monotonic() - started < timeout, f"no {text!r} in the log within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_stopped_database(server: ServerProcess, cluster: PostgresCluster, long_recording: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        running = submit(http, long_recording)["job_id"]
        queued = submit(http, SHORT)["job_id"]
        waited: list[tuple[float, str]] = []
        waiter, connected = mcp_waiter(server.url, running, waited)
        assert connected.wait(30), "no MCP session within 30 s"
        # Past its first window: the rest is decoded while the database is away.
        while http.get(f"/status/{running}").json()["progress"] < 0.15:
            time.sleep(0.05)
        events: list[tuple[float, str]] = []
        reader = follow(server.url, running, events)
        while not events:  # the stream's first event: it is open
            time.sleep(0.01)
        time.sleep(0.5)  # the MCP call is waiting too
        mark = len(server.log())

        halted = time.monotonic()
        cluster.halt()
        halt_returned = time.monotonic()
        answers = every_route(http, server.url, queued)
        livez = http.get("/livez")
        reader.join(5)
        waiter.join(5)
        assert livez.status_code == 200
        assert_refused_in_words(answers)
        # The stream's last event says the database is away, and it ends.
        assert events[-1][1] == "closed"
        when, last = events[-2]
        assert last.startswith("event: error") and "database" in last, last
        assert when - halt_returned < LIMIT, f"the stream's last event came {when - halted:.2f} s after the stop"
        # So does a waiting MCP call.
        assert waited and "database" in waited[0][1], waited
        assert waited[0][0] - halt_returned < LIMIT

        # The decode goes on; its end waits for the database.
        wait_for_log(server, mark, "its end is recorded once the job database is back", 120)
        away = log_since(server, mark)
        cluster.start()
        back = time.monotonic()
        ready = wait_ready(http, 5, "not ready 5 s after the database came back")
        long_done = wait_done(http, running, timeout=30)
        recorded = time.monotonic() - back
        done = wait_done(http, queued, timeout=30)
        next_done = time.monotonic() - back
        log = log_since(server, mark)

    print(
        "\nstopped database: "
        + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, (_, _, seconds) in answers.items())
        + f"; stream ended {events[-2][0] - halted:.2f} s after the stop began. After the start: ready in"
        f" {ready:.2f} s, the waiting job's end recorded in {recorded:.2f} s, the queued job done in {next_done:.2f} s"
    )
    assert away.count(OUTAGE_STARTS) == 1, away
    assert "Traceback" not in log, log
    assert log.count(OUTAGE_ENDS) == 1, log
    # Each job accepted before the outage completes after it, once: its first attempt.
    for record in (long_done, done):
        assert record["status"] == "completed", record
        assert record["attempts"] == 1, record
    assert "hello" in done["transcript"].lower()
    assert ready < 3 and recorded < 3


def test_a_database_that_hangs(server: ServerProcess, cluster: PostgresCluster) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        queued = submit(http, SHORT)["job_id"]
        wait_done(http, queued)  # a worker that has just run a job, its connections open
        accepted = submit(http, SHORT)["job_id"]
        mark = len(server.log())

        cluster.freeze()
        try:
            # A call hangs, the watch probes, the probe gets no answer.
            frozen = time.monotonic()
            first, first_seconds = timed(lambda: http.get("/health"))
            wait_for_log(server, mark, OUTAGE_STARTS, 10)
            noticed = time.monotonic() - frozen  # at most
            answers = every_route(http, server.url, accepted)
        finally:
            cluster.freeze(False)
        ready = wait_ready(http, 5, "not ready 5 s after the database answered again")
        done = wait_done(http, accepted, timeout=60)
        # Logged just after it is stored: /status may read it first.
        wait_for_log(server, mark, f"job {accepted} completed", 10)
        log = log_since(server, mark)

    print(
        f"\nhung database: noticed after {noticed:.2f} s, the first /health answered {first.status_code}"
        f" in {first_seconds:.2f} s; then "
        + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, (_, _, seconds) in answers.items())
        + f"; ready {ready:.2f} s after it answered again"
    )
    assert_refused_in_words(answers)
    assert log.count(OUTAGE_STARTS) == 1 and log.count(OUTAGE_ENDS) == 1, log
    assert "Traceback" not in log, log
    assert done["status"] == "completed", done
    # Completed exactly once. It runs again (a second attempt) only if the
    # worker had claimed it just before the freeze and the outage cut that run off.
    full = server.log()
    assert full.count(f"job {accepted} completed") == 1, full[mark:]
    if done["attempts"] != 1:
        assert done["attempts"] == 2 and full.index(f"job {accepted} started") < full.index(OUTAGE_STARTS, mark), done
    assert first.status_code == 503 and noticed < 3
