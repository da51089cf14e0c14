"""What several test modules share: fixture paths, small assertions, a job
request builder, and an in-process server over a fake engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from whisper_mcp.config import Settings
from whisper_mcp.queue.files import FileStore, new_key
from whisper_mcp.queue.jobs import JobRequest
from whisper_mcp.queue.store import SQLJobStore
from whisper_mcp.server.app import build_service, create_app
from whisper_mcp.server.connections import uvicorn_options
from whisper_mcp.server.service import TranscriptionService
from whisper_mcp.testing import ServerProcess, free_port

from fakes import FakeEngine

if TYPE_CHECKING:
    from whisper_mcp.transcriber import Transcriber

FIXTURES = Path(__file__).parent / "fixtures"
# What language routing adds to a job that names neither a model nor a language
# while the start-up model (tiny.en) is English-only: identified by base first.
ROUTED = {"identify_with": "base", "reroute": True}
ROOT = Path(__file__).parent.parent
LONG_AUDIO = FIXTURES / "long.mp3"  # ~62 s, several 30 s decoding windows

# The first message of an MCP session, sent raw (to see what a guard answers
# before FastMCP does), and the headers the streamable HTTP transport wants.
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

# The tests/e2e ``engines`` fixture: ``engines(kind)`` is a real engine of that kind.
Engines = Callable[[str], "Transcriber"]

__all__ = [
    "FIXTURES", "LONG_AUDIO", "ROOT", "CallbackReceiver", "InProcessServer", "ServerProcess", "free_port", "queued",
    "heard_live", "request", "submit", "tmpfs", "wait_done", "wait_over_mcp", "wait_status", "words",
]  # fmt: skip


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()} - {""}


def heard_live(expected: set[str], text: str) -> bool:
    """Whether a live transcript has the ``expected`` words, all but one: its
    first words are sent from greedy guesses at the growing utterance, never
    taken back, and tiny.en's guesses hear one of the fixtures' words amiss in
    some runs ("services" as "service and"). The bench measures live WER."""
    return len(expected - words(text)) <= 1


def wait_done(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    record: dict = {}
    while time.monotonic() < deadline:
        record = client.get(f"/status/{job_id}").json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {record}")


Progress = tuple[float, float | None, str | None]  # an MCP progress notification: progress, total, message


async def wait_over_mcp(
    client: Any, job_id: str, updates: list[Progress] | None = None, wait_seconds: float = 45, calls: int = 4
) -> dict:
    """What an agent does: check_transcription_status, waiting at most
    ``wait_seconds`` a call, until the job has ended or ``calls`` are made;
    progress notifications go to ``updates``. ``client``: a fastmcp Client."""

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if updates is not None:
            updates.append((progress, total, message))

    record: dict = {}
    for _ in range(calls):
        arguments = {"job_id": job_id, "wait_seconds": wait_seconds}
        result = await client.call_tool("check_transcription_status", arguments, progress_handler=on_progress)
        record = result.structured_content
        if record["status"] not in ("queued", "processing"):
            break
    return record


def wait_ready(client: httpx.Client, within: float, what: str) -> float:
    """Seconds until ``GET /health`` answers 200 (a dependency back);
    fails with ``what`` if that takes more than ``within``."""
    start = time.monotonic()
    while client.get("/health").status_code != 200:
        assert time.monotonic() - start < within, what
        time.sleep(0.05)
    return time.monotonic() - start


def wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    record: dict = {}
    while time.monotonic() < deadline:
        record = client.get(f"/status/{job_id}").json()
        if record["status"] == status:
            return record
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never reached {status}: {record}")


def submit(client: httpx.Client, path: Path, **fields: str) -> dict:
    """POST /transcribe with ``path`` (no transcript cache unless ``cache`` is
    given); asserts 202 and returns the job record."""
    fields.setdefault("cache", "false")
    with open(path, "rb") as f:
        response = client.post("/transcribe", files={"file": (path.name, f)}, data=fields)
    assert response.status_code == 202, response.text
    return response.json()


@contextlib.contextmanager
def tmpfs(mount: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB on ``mount`` (made here), unmounted, and so
    freed, afterwards; the test skips where it cannot be mounted."""
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def request(job_id: str, **overrides: object) -> JobRequest:
    """A queue entry as the service would make it, for store and worker tests."""
    values: dict[str, object] = dict(
        job_id=job_id,
        key=new_key(),
        filename=f"{job_id}.wav",
        model="tiny.en",
        callback_url=None,
        audio_sha256="ab" * 32,
        audio_bytes=1234,
        duration=1.5,
    )
    values.update(overrides)
    return JobRequest(**values)  # type: ignore[arg-type]


def queued(store: SQLJobStore, files: FileStore, job_id: str, **overrides: object) -> JobRequest:
    """A job stored queued with its audio in place (bytes the fake engine never decodes)."""
    req = request(job_id, **overrides)
    files.audio_path(req.key).write_bytes(b"audio")
    store.add(req, time.time())
    return req


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, but looking for should_exit every 10 ms instead of
    100 ms, and giving open connections 10 ms instead of a fixed 100 ms to take
    the request to close (its shutdown otherwise as uvicorn's): hundreds of
    tests each stop a server, and a stop takes 0.02 s instead of 0.11 s."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown)
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


@dataclass
class InProcessServer:
    """The real app (routes, MCP, queue, worker, SQLite) on a free loopback
    port, served by uvicorn on a thread of the test process, over a
    ``FakeEngine``: no torch, no model, starts in milliseconds.
    ``settings`` are ``Settings`` fields (e.g. ``token="s3cret"``)."""

    storage: Path
    settings: dict[str, object]
    engine: FakeEngine

    @classmethod
    def start(cls, storage: Path, engine: FakeEngine | None = None, **settings: object) -> InProcessServer:
        server = cls(storage, settings, engine or FakeEngine())
        server._run()
        return server

    def _run(self) -> None:
        self.port = int(self.settings.pop("port", 0) or free_port())  # type: ignore[call-overload]
        self.url = f"http://127.0.0.1:{self.port}"
        config = Settings.from_env({}, storage=self.storage, port=self.port, **self.settings)
        self.service: TranscriptionService = build_service(config, self.engine)
        self.app = app = create_app(config, self.service)
        self._server = _Uvicorn(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **uvicorn_options(config)
            )
        )
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("in-process server did not start")
            time.sleep(0.01)
        # Ready as ServerProcess.start means it: the default model loaded (or failed to).
        while not (state := self.service.worker.state()).model_loaded and state.model_error is None:
            if time.monotonic() > deadline:
                raise RuntimeError("in-process server did not load its model")
            time.sleep(0.005)

    def client(self, **kwargs: object) -> httpx.Client:
        """An HTTP client for this server (``headers=...`` and the like pass through)."""
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        gate = getattr(self.engine, "gate", None)  # a real engine has none
        if gate is not None:
            gate.set()  # a held job must not keep the worker from stopping
        self._server.should_exit = True
        self._thread.join(10)
        self.service.queue.close()

    def __enter__(self) -> InProcessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Call = tuple[str, dict[str, str], bytes, float]  # path, headers (lower-case names), body, arrival (monotonic)


class CallbackReceiver:
    """A local HTTP server that records every callback POST. It can fail the
    first ``fail_first[path]`` POSTs to a path (503), and take ``delay``
    seconds over each answer (a slow receiver). Close it with ``close()``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[Call] = []
        self.fail_first: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                time.sleep(delay)
                receiver.calls.append((self.path, headers, body, time.monotonic()))
                failures = receiver.fail_first.get(self.path, 0)
                if failures > 0:
                    receiver.fail_first[self.path] = failures - 1
                    self.send_response(503)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[Call]:
        return [c for c in list(self.calls) if c[0] == path]

    def bodies(self, job_id: str | None = None) -> list[dict]:
        """The JSON bodies received (for one job, if given), in arrival order."""
        found = [json.loads(c[2]) for c in list(self.calls)]
        return [b for b in found if job_id is None or b.get("job_id") == job_id]

    def wait_for(self, path: str, count: int, timeout: float = 15) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.to(path)) >= count:
                return self.to(path)
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.to(path))} calls in {timeout}s, wanted {count}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def long_audio_slices(count: int, seed: int) -> list[Any]:
    """``count`` 5-10 s pieces of long.mp3, cut anywhere (mid-word, like real clips can).

    The seeds the tests use give clips that tiny.en decodes confidently at
    temperature 0: a clip that falls back to sampling (some seeds cut one
    that does) gets a random transcript, which no equality can test."""
    import random

    from whisper_mcp.engines.audio import SAMPLE_RATE, decode_audio

    audio = decode_audio(LONG_AUDIO)
    rng = random.Random(seed)
    pieces = []
    for _ in range(count):
        length = rng.uniform(5.0, 10.0)
        start = rng.uniform(0.0, len(audio) / SAMPLE_RATE - length)
        pieces.append(audio[int(start * SAMPLE_RATE) : int((start + length) * SAMPLE_RATE)])
    return pieces


def silence(seconds: float) -> Any:
    """``seconds`` of digital silence at Whisper's sample rate (float32)."""
    import numpy as np

    from whisper_mcp.engines.audio import SAMPLE_RATE

    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def batched(engine: Any, items: list[Any], options: Any, model: str = "tiny.en") -> tuple[list[Any], int]:
    """``engine.transcribe_batch`` outcomes, and how many first windows
    transcribe() took from the batch (a Transcriber's backend counts them)."""
    before = engine.backend.batched_windows
    outcomes = engine.transcribe_batch(items, engine.registry.resolve(model), options)
    return outcomes, engine.backend.batched_windows - before


Route = tuple[int, dict[str, str], bytes]  # status, headers, body


class AudioServer:
    """A local HTTP server for jobs sent as a URL: ``routes`` maps a path to
    (status, headers, body); any other path is a 404. It records every
    request (path, lower-case headers). Close it with ``close()``."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = server.routes.get(self.path.split("?")[0], (404, {}, b"not here"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, file: Path) -> str:
        """Serve ``file`` at ``path``; its URL."""
        self.routes[path] = (200, {"content-type": "audio/wav"}, file.read_bytes())
        return self.url + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = (status, {"location": location}, b"")
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# Debian's chromium, driven by playwright (no browser download); headless,
# no network beyond the page's own server.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def fake_microphone(recording: Path) -> list[str]:
    """Chromium flags for a microphone that plays ``recording`` (a WAV) over
    and over, allowed without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={recording}",
    ]
