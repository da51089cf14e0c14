"""Jobs sent as a URL (audio_url), in process over a fake engine: what the
submission refuses (in words, before any job exists), and what the job's run
does with a local HTTP server: fetch and decode, follow a redirect, fail
naming the host (an HTTP error, the upload limit, not audio), the URL's
credentials kept out of answers and logs, and the same on the MCP tool.
Refusals of non-loopback addresses: tests/unit/test_audio_url_refusals.py;
with the real model: tests/e2e/test_audio_url_e2e.py."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError

from whisper_mcp.engines.audio import probe_audio
from whisper_mcp.server.audio_urls import MAX_URL_CHARS, S3_NEEDS_STORE, UNREACHABLE
from whisper_mcp.testing import free_port

from helpers import FIXTURES, AudioServer, InProcessServer, wait_done, wait_status

SPEECH = FIXTURES / "speech.wav"


@pytest.fixture
def audio() -> Iterator[AudioServer]:
    server = AudioServer()
    yield server
    server.close()


@pytest.fixture
def stalled() -> Iterator[str]:
    """The URL of a server that takes the connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.wav"
    listener.close()
    for conn in held:
        conn.close()


def fake_text(path: Path) -> str:
    return f"fake transcript of {probe_audio(path).duration:.1f} seconds\n"


def send(client: httpx.Client, **fields: str) -> httpx.Response:
    """POST /transcribe as a form with these fields and no file."""
    return client.post("/transcribe", files={name: (None, value) for name, value in fields.items()})


def refused(client: httpx.Client, **fields: str) -> str:
    response = send(client, **fields)
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


# -- the submission ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/a.wav", "audio_url must be an https:// or http:// URL, got 'ftp://example.com/a.wav'"),
        ("file:///etc/passwd", "the server never reads its own files: send the file itself"),
        ("/srv/audio/a.wav", "audio_url must be an https:// or http:// URL"),
        ("s3://bucket/key.wav", S3_NEEDS_STORE),
        ("http:///a.wav", "names no host"),
        ("http://example.com:port/a.wav", "is not a valid URL"),
        ("http://example.com/a b.wav", "may not contain spaces"),
        ("https://example.com/" + "a" * MAX_URL_CHARS, f"audio_url is too long ({MAX_URL_CHARS + 20} characters"),
    ],
)
def test_a_url_the_server_cannot_fetch_is_refused_in_words(
    fake_server: InProcessServer, fake_client: httpx.Client, url: str, words: str
) -> None:
    assert words in refused(fake_client, audio_url=url)
    assert fake_client.get("/jobs").json()["total"] == 0


def test_the_file_and_its_url_together_or_neither_are_refused(fake_client: httpx.Client, audio: AudioServer) -> None:
    url = audio.serve("/speech.wav", SPEECH)
    with open(SPEECH, "rb") as f:
        both = fake_client.post("/transcribe", files={"file": ("speech.wav", f)}, data={"audio_url": url})
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    neither = refused(fake_client, model="tiny.en")
    assert "put the file in a multipart field named 'file', or its URL in 'audio_url'" in neither
    assert "audio_url is empty" in refused(fake_client, audio_url="  ")
    assert fake_client.get("/jobs").json()["total"] == 0
    assert audio.requests == []  # nothing fetched for a refused submission


def test_a_bad_option_is_refused_before_anything_is_fetched(fake_client: httpx.Client, audio: AudioServer) -> None:
    url = audio.serve("/speech.wav", SPEECH)
    assert "beam_size" in refused(fake_client, audio_url=url, beam_size="99")
    assert audio.requests == []


# -- the job's run -----------------------------------------------------------


def test_the_job_fetches_its_audio_and_hides_the_urls_secrets(
    fake_server: InProcessServer, fake_client: httpx.Client, audio: AudioServer, caplog: pytest.LogCaptureFixture
) -> None:
    audio.serve("/speech.wav", SPEECH)
    url = audio.url.replace("http://", "http://user:hunter2@") + "/speech.wav?signature=t0ps3cret"
    caplog.set_level(logging.DEBUG)
    response = send(fake_client, audio_url=url, job_id="from-url")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["job_id"] == "from-url" and job["filename"] == "speech.wav"
    shown = f"http://***@127.0.0.1:{audio.url.rsplit(':', 1)[1]}/speech.wav?signature=***"
    assert job["audio_url"] == shown
    record = wait_done(fake_client, "from-url")
    assert record["status"] == "completed", record
    assert record["transcript"] == fake_text(SPEECH)
    assert record["audio_seconds"] == pytest.approx(probe_audio(SPEECH).duration, abs=0.001)
    assert record["audio_url"] == shown
    # Fetched once, as the client named it (query included), under its own host name.
    [(path, headers)] = audio.requests
    assert path == "/speech.wav?signature=t0ps3cret"
    assert headers["host"] == audio.url.removeprefix("http://")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in logged and "t0ps3cret" not in logged
    assert "hunter2" not in str(fake_client.get("/jobs").json())
    # The same URL and job_id again: the same job; another URL: a conflict.
    again = send(fake_client, audio_url=url, job_id="from-url")
    assert again.status_code == 202 and again.json()["status"] == "completed"
    other = send(fake_client, audio_url=audio.url + "/other.wav", job_id="from-url")
    assert other.status_code == 409, other.text


def test_a_redirect_is_followed_and_each_hop_vetted(fake_client: httpx.Client, audio: AudioServer) -> None:
    audio.serve("/real.wav", SPEECH)
    url = audio.redirect("/moved", "/real.wav")
    record = wait_done(fake_client, send(fake_client, audio_url=url).json()["job_id"])
    assert record["status"] == "completed", record
    assert [path for path, _ in audio.requests] == ["/moved", "/real.wav"]


def test_a_failed_fetch_fails_the_job_naming_the_host(fake_client: httpx.Client, audio: AudioServer) -> None:
    response = send(fake_client, audio_url=audio.url + "/missing.wav?token=abc")
    assert response.status_code == 202  # the submission is not where a fetch fails
    record = wait_done(fake_client, response.json()["job_id"])
    assert record["status"] == "failed"
    assert record["error"] == "could not fetch audio from 127.0.0.1: HTTP 404"
    closed = f"http://127.0.0.1:{free_port()}/a.wav"  # nothing listens there
    record = wait_done(fake_client, send(fake_client, audio_url=closed).json()["job_id"])
    assert record["error"] == f"could not fetch audio from 127.0.0.1: {UNREACHABLE}"


def test_too_many_redirects_and_a_redirect_to_another_scheme_fail_the_job(
    fake_client: httpx.Client, audio: AudioServer
) -> None:
    loop = audio.redirect("/loop", "/loop")
    record = wait_done(fake_client, send(fake_client, audio_url=loop).json()["job_id"])
    assert record["error"] == "could not fetch audio from 127.0.0.1: more than 5 redirects"
    local = audio.redirect("/local", "file:///etc/passwd")
    record = wait_done(fake_client, send(fake_client, audio_url=local).json()["job_id"])
    assert record["status"] == "failed"
    assert "its redirect to a file:// URL was refused: audio_url must be an http:// or https:// URL" in record["error"]


def test_audio_over_the_upload_limit_fails_the_job(tmp_path: Path, audio: AudioServer) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(SPEECH.read_bytes() * (2 * 2**20 // SPEECH.stat().st_size + 1))
    declared = audio.serve("/big.wav", big)
    # The same bytes without a Content-Length: stopped as they cross the limit.
    audio.routes["/chunked.wav"] = (200, {}, big.read_bytes())
    with InProcessServer.start(tmp_path / "storage", max_upload_mb=1) as srv, srv.client() as client:
        for url in (declared, audio.url + "/chunked.wav"):
            record = wait_done(client, send(client, audio_url=url).json()["job_id"])
            assert record["status"] == "failed"
            assert record["error"] == (
                "could not fetch audio from 127.0.0.1: it is larger than the server's limit of 1 MiB (--max-upload-mb)."
            )
        assert list((tmp_path / "storage" / "incoming").iterdir()) == []


def test_what_is_not_audio_fails_the_job_in_words(fake_client: httpx.Client, audio: AudioServer) -> None:
    audio.serve("/page.html", FIXTURES / "not_audio.bin")
    record = wait_done(fake_client, send(fake_client, audio_url=audio.url + "/page.html").json()["job_id"])
    assert record["status"] == "failed"
    assert record["error"].startswith("the audio fetched from 127.0.0.1 cannot be used: ")


def test_the_mcp_tool_takes_an_audio_url(fake_server: InProcessServer, audio: AudioServer) -> None:
    url = audio.serve("/speech.wav", SPEECH)
    clip = base64.b64encode(SPEECH.read_bytes()).decode()

    async def over_mcp() -> str:
        async with Client(StreamableHttpTransport(f"{fake_server.url}/mcp")) as mcp:
            with pytest.raises(ToolError, match="exactly one of audio_base64 .*, upload_id .* or audio_url"):
                await mcp.call_tool("transcribe_wav", {"audio_base64": clip, "audio_url": url})
            with pytest.raises(ToolError, match="exactly one of"):
                await mcp.call_tool("transcribe_wav", {})
            with pytest.raises(ToolError, match="--storage-url s3://"):
                await mcp.call_tool("transcribe_wav", {"audio_url": "s3://bucket/a.wav"})
            queued = await mcp.call_tool("transcribe_wav", {"audio_url": url})
            return str(queued.structured_content["job_id"])  # type: ignore[index]

    job_id = anyio.run(over_mcp)
    with fake_server.client() as client:
        record = wait_done(client, job_id)
    assert record["status"] == "completed" and record["transcript"] == fake_text(SPEECH)


def test_a_cancel_stops_a_fetch_that_hangs(fake_client: httpx.Client, stalled: str) -> None:
    job_id = send(fake_client, audio_url=stalled).json()["job_id"]
    record = wait_status(fake_client, job_id, "processing")
    assert record["progress"] == 0.0 and record["audio_seconds"] == 0.0
    started = time.monotonic()
    fake_client.delete(f"/jobs/{job_id}")
    record = wait_done(fake_client, job_id)
    assert record["status"] == "cancelled", record
    assert time.monotonic() - started < 5  # not the 30 s the read would wait


def test_a_shutdown_puts_a_hanging_fetch_back_in_the_queue(tmp_path: Path, stalled: str) -> None:
    with InProcessServer.start(tmp_path / "storage") as srv, srv.client() as client:
        job_id = send(client, audio_url=stalled).json()["job_id"]
        wait_status(client, job_id, "processing")
        started = time.monotonic()
        srv.service.worker.stop()
        assert time.monotonic() - started < 5
        job = srv.service.queue.get(job_id)
        assert job is not None and job.status.value == "queued" and job.attempts == 0, job


def test_a_hanging_fetch_holds_up_only_its_own_job(fake_client: httpx.Client, stalled: str) -> None:
    """Fetches run apart from decoding: an upload queued behind a fetch that
    hangs is transcribed meanwhile."""
    hanging = send(fake_client, audio_url=stalled).json()["job_id"]
    wait_status(fake_client, hanging, "processing")
    with open(SPEECH, "rb") as f:
        upload = fake_client.post("/transcribe", files={"file": ("speech.wav", f)}, data={"cache": "false"})
    record = wait_done(fake_client, upload.json()["job_id"], timeout=10)
    assert record["status"] == "completed", record
    assert fake_client.get(f"/status/{hanging}").json()["status"] == "processing"
    assert fake_client.delete(f"/jobs/{hanging}").status_code == 200
