"""Uploads for agents and a service safe to expose: chunked MCP uploads,
one-time upload URLs, streaming limits, input rules, auth, Origin checks,
storage hygiene. Real server, real model."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server as exposed to other hosts: token, tight limits, quick expiry."""
    root = tmp_path_factory.mktemp("secured")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    srv = ServerProcess(
        root / "storage", root / "server.log", 
        "--token-file", str(token_file),
        "--max-upload-mb", "4",
        "--max-audio-seconds", "120",
        "--upload-ttl-seconds", "3",
        "--housekeeping-seconds", "0.5",
        "--allowed-origins", "https://dashboard.example",
    )  # fmt: skip
    srv.start(headers=AUTH)
    yield srv
    srv.stop()


@pytest.fixture
def http(secured: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, headers=AUTH, timeout=60) as c:
        yield c


def mcp_client(server: ServerProcess) -> Client:
    return Client(StreamableHttpTransport(f"{server.url}/mcp", headers=AUTH))


def storage_files(server: ServerProcess) -> list[Path]:
    return [p for p in server.storage.rglob("*") if p.is_file() and not p.name.startswith("jobs.sqlite3")]


# -- chunked MCP upload ----------------------------------------------------------


@pytest.mark.anyio
async def test_chunked_upload_end_to_end(secured: ServerProcess, http: httpx.Client) -> None:
    data = LONG_AUDIO.read_bytes()  # ~250 KB: several chunks at 64 KB
    chunk = 64 * 1024
    async with mcp_client(secured) as mcp:
        begun = (
            await mcp.call_tool(
                "begin_upload",
                {"filename": "long.mp3", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
            )
        ).data
        upload_id = begun["upload_id"]
        offsets = list(range(0, len(data), chunk))
        # Out of order, with one chunk sent twice.
        for offset in [*offsets[1:], offsets[0], offsets[1]]:
            piece = base64.b64encode(data[offset : offset + chunk]).decode()
            answer = (
                await mcp.call_tool("upload_chunk", {"upload_id": upload_id, "offset": offset, "data_base64": piece})
            ).data
        assert answer["complete"] is True and answer["received_bytes"] == len(data)
        # Different bytes where some already arrived: refused clearly.
        with pytest.raises(ToolError, match="different content"):
            await mcp.call_tool(
                "upload_chunk",
                {"upload_id": upload_id, "offset": 10, "data_base64": base64.b64encode(b"XXXX").decode()},
            )
        queued = (await mcp.call_tool("transcribe_wav", {"upload_id": upload_id, "cache": False})).data
        assert queued["filename"] == "long.mp3"
        done = wait_done(http, queued["job_id"], timeout=180)
        assert done["status"] == "completed"
        assert {"planning", "meeting", "budget", "december"} <= words(done["transcript"])
        # The upload is used up.
        with pytest.raises(ToolError, match="No open upload"):
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id})


@pytest.mark.anyio
async def test_chunked_upload_errors(secured: ServerProcess) -> None:
    data = (FIXTURES / "short.wav").read_bytes()
    async with mcp_client(secured) as mcp:
        wrong = (await mcp.call_tool("begin_upload", {"size": len(data), "sha256": "0" * 64})).data
        await mcp.call_tool(
            "upload_chunk", {"upload_id": wrong["upload_id"], "offset": 0, "data_base64": base64.b64encode(data).decode()}
        )
        with pytest.raises(ToolError, match="Checksum mismatch"):
            await mcp.call_tool("transcribe_wav", {"upload_id": wrong["upload_id"]})

        partial = (await mcp.call_tool("begin_upload", {"size": len(data)})).data
        await mcp.call_tool(
            "upload_chunk", {"upload_id": partial["upload_id"], "offset": 0, "data_base64": base64.b64encode(data[:1000]).decode()}
        )
        with pytest.raises(ToolError, match="incomplete: missing bytes 1000-"):
            await mcp.call_tool("transcribe_wav", {"upload_id": partial["upload_id"]})
        with pytest.raises(ToolError, match="past the declared size"):
            await mcp.call_tool(
                "upload_chunk",
                {"upload_id": partial["upload_id"], "offset": len(data), "data_base64": base64.b64encode(b"x").decode()},
            )
        with pytest.raises(ToolError, match="exceeds the upload limit"):
            await mcp.call_tool("begin_upload", {"size": 5 * 1024 * 1024})
        with pytest.raises(ToolError, match="exactly one"):
            await mcp.call_tool("transcribe_wav", {})
        with pytest.raises(ToolError, match="No open upload"):
            await mcp.call_tool("upload_chunk", {"upload_id": "nope", "offset": 0, "data_base64": "AAAA"})


@pytest.mark.anyio
async def test_abandoned_upload_expires_and_its_bytes_are_removed(secured: ServerProcess) -> None:
    async with mcp_client(secured) as mcp:
        begun = (await mcp.call_tool("begin_upload", {"size": 100})).data
        await mcp.call_tool(
            "upload_chunk", {"upload_id": begun["upload_id"], "offset": 0, "data_base64": base64.b64encode(b"a" * 50).decode()}
        )
        path = secured.storage / "uploads" / begun["upload_id"]
        assert path.exists()
        deadline = time.monotonic() + 15
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not path.exists()
        with pytest.raises(ToolError, match="expired"):
            await mcp.call_tool("transcribe_wav", {"upload_id": begun["upload_id"]})


# -- one-time upload URL -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["--data-binary", "-T"])
async def test_one_time_url_with_curl(secured: ServerProcess, http: httpx.Client, style: str) -> None:
    async with mcp_client(secured) as mcp:
        tools = {t.name: t for t in await mcp.list_tools()}
        assert "curl" in (tools["create_upload_url"].description or "")
        made = (await mcp.call_tool("create_upload_url", {"filename": "speech.wav"})).data
    url, job_id = made["upload_url"], made["job_id"]
    assert made["command"].startswith("curl")
    fixture = str(FIXTURES / "speech.wav")
    arg = f"@{fixture}" if style == "--data-binary" else fixture
    # No token: the URL's secret is the credential.
    first = subprocess.run(["curl", "-sS", style, arg, url], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["job_id"] == job_id
    again = subprocess.run(["curl", "-sS", "-w", "%{http_code}", style, arg, url], capture_output=True, text=True, timeout=60)
    assert again.stdout.endswith("404") and "already used" in again.stdout
    done = wait_done(http, job_id)
    assert {"transcription", "meeting", "report"} <= words(done["transcript"])


@pytest.mark.anyio
async def test_one_time_url_expires(secured: ServerProcess) -> None:
    async with mcp_client(secured) as mcp:
        made = (await mcp.call_tool("create_upload_url", {})).data
    time.sleep(3.5)
    response = httpx.put(made["upload_url"], content=(FIXTURES / "short.wav").read_bytes())
    assert response.status_code == 404 and "expired" in response.json()["error"]["message"]


# -- streaming limits -------------------------------------------------------------------


def test_oversized_upload_is_refused_early_and_leaves_nothing(secured: ServerProcess, http: httpx.Client) -> None:
    before = set(storage_files(secured))

    def body() -> Iterator[bytes]:  # no Content-Length: the limit must trip while streaming
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n\r\n"
        for _ in range(6 * 16):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    response = http.post("/transcribe", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "4 MiB" in response.json()["error"]["message"]
    # A declared length over the limit is refused before any body is read.
    with socket.create_connection(("127.0.0.1", secured.port), timeout=10) as sock:
        sock.sendall(
            f"POST /transcribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * 2**20}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    assert set(storage_files(secured)) == before
    assert http.get("/health").json()["status"] == "ok"


def test_too_long_audio_is_refused(secured: ServerProcess, http: httpx.Client, tmp_path: Path) -> None:
    import wave

    path = tmp_path / "long-silence.wav"
    with wave.open(str(path), "wb") as w:  # 3 minutes at 8 kHz 8-bit: 1.4 MB, over the 120 s limit
        w.setnchannels(1), w.setsampwidth(1), w.setframerate(8000)
        w.writeframes(b"\x80" * 8000 * 180)
    with open(path, "rb") as f:
        response = http.post("/transcribe", files={"file": ("long.wav", f)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "audio_too_long"
    assert "3.0 minutes" in response.json()["error"]["message"]


def test_low_disk_space_answers_507_before_writing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--min-free-mb", str(2**30)).start()
    try:
        with open(FIXTURES / "short.wav", "rb") as f:
            response = httpx.post(f"{srv.url}/transcribe", files={"file": ("short.wav", f)})
        assert response.status_code == 507
        assert "disk space" in response.json()["error"]["message"]
        assert list((srv.storage / "incoming").iterdir()) == []
    finally:
        srv.stop()


# -- input rules -------------------------------------------------------------------------


BAD_INPUTS = [
    # (description, request kwargs, status, error code)
    ("not audio", {"files": {"file": ("x.wav", b"hello world" * 10)}}, 400, "invalid_audio"),
    ("empty", {"files": {"file": ("x.wav", b"")}}, 400, "invalid_audio"),
    ("truncated", {"files": {"file": ("t.wav", (FIXTURES / "truncated.wav").read_bytes())}}, 400, "invalid_audio"),
    ("no file field", {"data": {"model": "tiny.en"}, "files": {"other": ("x", b"1")}}, 400, "invalid_input"),
    ("unknown model", {"data": {"model": "gigantic"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    ("model path outside the model cache", {"data": {"model": "/etc/ssl/x.pt"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    ("model path with a user's home", {"data": {"model": "~nosuchuser\u00db/x.pt"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    ("path-like job_id", {"data": {"job_id": "../../x"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("long job_id", {"data": {"job_id": "a" * 129}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("ftp callback", {"data": {"callback_url": "ftp://x/y"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("not multipart", {"content": b"RIFF", "headers": {"content-type": "audio/wav"}}, 400, "invalid_input"),
    ("broken multipart", {"content": b"--b\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, "invalid_input"),
    ("no boundary", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400, "invalid_input"),
]


@pytest.mark.parametrize(("what", "kwargs", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_table(secured: ServerProcess, http: httpx.Client, what: str, kwargs: dict, status: int, code: str) -> None:
    response = http.post("/transcribe", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 20
    assert list((secured.storage / "incoming").iterdir()) == []


@pytest.mark.anyio
async def test_bad_base64_over_mcp(secured: ServerProcess) -> None:
    async with mcp_client(secured) as mcp:
        with pytest.raises(ToolError, match="not valid base64"):
            await mcp.call_tool("transcribe_wav", {"audio_base64": "%%%"})


def test_duplicate_job_id_same_audio_returns_existing(secured: ServerProcess, http: httpx.Client) -> None:
    def send(name: str) -> httpx.Response:
        with open(FIXTURES / name, "rb") as f:
            return http.post("/transcribe", files={"file": (name, f)}, data={"job_id": "dup-1"})

    assert send("short.wav").status_code == 202
    assert send("short.wav").json()["job_id"] == "dup-1"
    assert send("speech.wav").status_code == 409


def test_nothing_escapes_the_storage_folder_and_service_stays_up(secured: ServerProcess, http: httpx.Client) -> None:
    root = secured.storage.resolve()
    for path in secured.storage.rglob("*"):
        assert path.resolve().is_relative_to(root)
    assert not (secured.storage.parent / "x").exists()
    assert http.get("/health").json()["status"] == "ok"


# -- auth and Origin ---------------------------------------------------------------------------


PROTECTED = [
    ("GET", "/health"),
    ("GET", "/status/x"),
    ("GET", "/download/x"),
    ("GET", "/jobs"),
    ("DELETE", "/jobs/x"),
    ("GET", "/models"),
    ("POST", "/transcribe"),
    ("GET", "/openapi.json"),
    ("POST", "/mcp"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_needs_the_token(secured: ServerProcess, method: str, path: str) -> None:
    bare = httpx.request(method, secured.url + path)
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert "bearer token" in bare.json()["error"]["message"].lower()
    wrong = httpx.request(method, secured.url + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.request(method, secured.url + path, headers=AUTH)
    assert right.status_code != 401


def test_liveness_needs_no_token(secured: ServerProcess) -> None:
    assert httpx.get(f"{secured.url}/livez").json() == {"status": "ok"}


@pytest.mark.anyio
async def test_mcp_works_with_the_token_only(secured: ServerProcess) -> None:
    async with mcp_client(secured) as mcp:
        assert (await mcp.call_tool("health", {})).data["model_loaded"] is True
    with pytest.raises(Exception):
        async with Client(f"{secured.url}/mcp") as bare:
            await bare.list_tools()


def test_foreign_origin_is_refused_on_mcp(secured: ServerProcess) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {**AUTH, "accept": "application/json, text/event-stream", "content-type": "application/json"}
    evil = httpx.post(f"{secured.url}/mcp", json=init, headers={**headers, "origin": "https://evil.example"})
    assert evil.status_code == 403 and "not allowed" in evil.json()["error"]["message"]
    for origin in (f"http://127.0.0.1:{secured.port}", "https://dashboard.example"):
        ok = httpx.post(f"{secured.url}/mcp", json=init, headers={**headers, "origin": origin})
        assert ok.status_code != 403, origin


def test_non_loopback_without_token_warns(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--host", "0.0.0.0")
    srv.start()
    try:
        assert "WITHOUT A TOKEN" in srv.log()
    finally:
        srv.stop()


# -- storage hygiene --------------------------------------------------------------------------


def test_audio_is_deleted_when_the_job_ends(secured: ServerProcess, http: httpx.Client) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        job = http.post("/transcribe", files={"file": ("s.wav", f)}, data={"cache": "false"}).json()
    assert wait_done(http, job["job_id"])["status"] == "completed"
    time.sleep(0.2)
    assert list((secured.storage / "audio").iterdir()) == []


def test_openapi_describes_the_routes(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/transcribe", "/status/{job_id}", "/download/{job_id}", "/jobs", "/health", "/upload/{secret}"} <= set(spec["paths"])



def test_same_origin_under_another_host_name_needs_the_token(secured: ServerProcess, server: ServerProcess) -> None:
    """The dashboard opened via a LAN name may use /mcp on a token server; without
    a token, a hostile page that rebinds its name to us may not."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    base = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with_token = httpx.post(
        f"{secured.url}/mcp",
        json=init,
        headers={**base, **AUTH, "host": f"transcriber.lan:{secured.port}", "origin": f"http://transcriber.lan:{secured.port}"},
    )
    assert with_token.status_code != 403
    no_token = httpx.post(
        f"{server.url}/mcp",
        json=init,
        headers={**base, "host": f"rebound.example:{server.port}", "origin": f"http://rebound.example:{server.port}"},
    )
    assert no_token.status_code == 403


def test_ended_jobs_expire_after_retention(tmp_path: Path) -> None:
    # 0.00003 days = 2.6 s; sweeps every half second.
    srv = ServerProcess(
        tmp_path / "storage", tmp_path / "server.log", "--retention-days", "0.00003", "--housekeeping-seconds", "0.5"
    ).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            with open(FIXTURES / "short.wav", "rb") as f:
                job = client.post("/transcribe", files={"file": ("s.wav", f)}).json()
            assert wait_done(client, job["job_id"])["status"] == "completed"
            assert list((srv.storage / "results").iterdir())
            deadline = time.monotonic() + 20
            while client.get(f"/status/{job['job_id']}").status_code != 404:
                assert time.monotonic() < deadline, "the job never expired"
                time.sleep(0.3)
            assert list((srv.storage / "results").iterdir()) == []
            assert client.get("/health").json()["status"] == "ok"
    finally:
        srv.stop()
