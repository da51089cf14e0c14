"""Uploads for agents and a service safe to expose, in process over a fake
engine: chunked MCP uploads, one-time upload URLs (sent with the real curl),
streaming limits, input rules, auth, Origin checks, storage hygiene, expiry."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from whisper_mcp.engines.audio import probe_audio

from helpers import FIXTURES, INIT, LONG_AUDIO, MCP_HEADERS, InProcessServer, wait_done

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """A server as exposed to other hosts: token (from a file), tight limits."""
    root = tmp_path_factory.mktemp("secured")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    with InProcessServer.start(
        root / "storage",
        token_file=token_file,
        max_upload_mb=4,
        max_audio_seconds=120,
        allowed_origins=("https://dashboard.example",),
        allowed_hosts=("transcriber.lan",),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """Unused uploads expire after a second; sweeps every 0.2 s."""
    root = tmp_path_factory.mktemp("expiring")
    with InProcessServer.start(root / "storage", token=TOKEN, upload_ttl_seconds=1, housekeeping_seconds=0.2) as srv:
        yield srv


@pytest.fixture
def http(secured: InProcessServer) -> Iterator[httpx.Client]:
    with secured.client(headers=AUTH) as c:
        yield c


def mcp_client(server: InProcessServer) -> Client:
    return Client(StreamableHttpTransport(f"{server.url}/mcp", headers=AUTH))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def storage_files(server: InProcessServer) -> list[Path]:
    return [p for p in server.storage.rglob("*") if p.is_file() and not p.name.startswith("jobs.sqlite3")]


def fake_text(path: Path) -> str:
    return f"fake transcript of {probe_audio(path).duration:.1f} seconds\n"


# -- chunked MCP upload ----------------------------------------------------------


@pytest.mark.anyio
async def test_chunked_upload_end_to_end(secured: InProcessServer, http: httpx.Client) -> None:
    data = LONG_AUDIO.read_bytes()  # ~250 KB: several chunks at 64 KB
    chunk = 64 * 1024
    async with mcp_client(secured) as mcp:
        begun = (
            await mcp.call_tool(
                "begin_upload",
                {"filename": "long.mp3", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
            )
        ).structured_content
        upload_id = begun["upload_id"]
        offsets = list(range(0, len(data), chunk))
        assert len(offsets) > 3
        # Out of order, with one chunk sent twice.
        for offset in [*offsets[1:], offsets[0], offsets[1]]:
            answer = (
                await mcp.call_tool(
                    "upload_chunk",
                    {"upload_id": upload_id, "offset": offset, "data_base64": b64(data[offset : offset + chunk])},
                )
            ).structured_content
            if offset == offsets[-1]:  # the first chunk is still missing
                assert answer["complete"] is False and answer["missing"] == [[0, chunk]]
        assert answer["complete"] is True and answer["received_bytes"] == len(data)
        # Different bytes where some already arrived: refused clearly.
        with pytest.raises(ToolError, match="different content"):
            await mcp.call_tool("upload_chunk", {"upload_id": upload_id, "offset": 10, "data_base64": b64(b"XXXX")})
        queued = (await mcp.call_tool("transcribe_wav", {"upload_id": upload_id, "cache": False})).structured_content
        assert queued["filename"] == "long.mp3"
        done = wait_done(http, queued["job_id"])
        assert done["status"] == "completed"
        # The job's audio is the file sent, whole: it decodes to the same length.
        assert done["audio_seconds"] == pytest.approx(probe_audio(LONG_AUDIO).duration, abs=0.001)
        assert done["transcript"] == fake_text(LONG_AUDIO)
        # The upload is used up.
        with pytest.raises(ToolError, match="No open upload"):
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id})
    assert not (secured.storage / "uploads" / upload_id).exists()


@pytest.mark.anyio
async def test_chunked_upload_errors(secured: InProcessServer) -> None:
    data = (FIXTURES / "short.wav").read_bytes()
    async with mcp_client(secured) as mcp:
        wrong = (await mcp.call_tool("begin_upload", {"size": len(data), "sha256": "0" * 64})).structured_content
        await mcp.call_tool("upload_chunk", {"upload_id": wrong["upload_id"], "offset": 0, "data_base64": b64(data)})
        with pytest.raises(ToolError, match="Checksum mismatch"):
            await mcp.call_tool("transcribe_wav", {"upload_id": wrong["upload_id"]})
        assert not (secured.storage / "uploads" / wrong["upload_id"]).exists()  # discarded

        partial = (await mcp.call_tool("begin_upload", {"size": len(data)})).structured_content
        await mcp.call_tool(
            "upload_chunk", {"upload_id": partial["upload_id"], "offset": 0, "data_base64": b64(data[:1000])}
        )
        with pytest.raises(ToolError, match="incomplete: missing bytes 1000-"):
            await mcp.call_tool("transcribe_wav", {"upload_id": partial["upload_id"]})
        with pytest.raises(ToolError, match="past the declared size"):
            await mcp.call_tool(
                "upload_chunk", {"upload_id": partial["upload_id"], "offset": len(data), "data_base64": b64(b"x")}
            )
        with pytest.raises(ToolError, match="exceeds the upload limit"):
            await mcp.call_tool("begin_upload", {"size": 5 * 1024 * 1024})
        with pytest.raises(ToolError, match="sha256 must be 64 hexadecimal"):
            await mcp.call_tool("begin_upload", {"size": 10, "sha256": "abc"})
        with pytest.raises(ToolError, match="exactly one"):
            await mcp.call_tool("transcribe_wav", {})
        with pytest.raises(ToolError, match="No open upload"):
            await mcp.call_tool("upload_chunk", {"upload_id": "nope", "offset": 0, "data_base64": "AAAA"})


@pytest.mark.anyio
async def test_abandoned_upload_expires_and_its_bytes_are_removed(expiring: InProcessServer) -> None:
    async with mcp_client(expiring) as mcp:
        begun = (await mcp.call_tool("begin_upload", {"size": 100})).structured_content
        await mcp.call_tool(
            "upload_chunk", {"upload_id": begun["upload_id"], "offset": 0, "data_base64": b64(b"a" * 50)}
        )
        path = expiring.storage / "uploads" / begun["upload_id"]
        assert path.exists()
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not path.exists()
        with pytest.raises(ToolError, match="expired"):
            await mcp.call_tool("transcribe_wav", {"upload_id": begun["upload_id"]})


# -- one-time upload URL -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["--data-binary", "-T"])
@pytest.mark.slow  # runs curl
async def test_one_time_url_with_curl(secured: InProcessServer, http: httpx.Client, style: str) -> None:
    async with mcp_client(secured) as mcp:
        tools = {t.name: t for t in await mcp.list_tools()}
        assert "curl" in (tools["create_upload_url"].description or "")
        made = (await mcp.call_tool("create_upload_url", {"filename": "speech.wav"})).structured_content
    url, job_id = made["upload_url"], made["job_id"]
    assert url.startswith(f"{secured.url}/upload/")
    assert made["command"].startswith("curl") and url in made["command"]
    fixture = str(FIXTURES / "speech.wav")
    arg = f"@{fixture}" if style == "--data-binary" else fixture
    # No token: the URL's secret is the credential.
    first = subprocess.run(["curl", "-sS", style, arg, url], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["job_id"] == job_id
    again = subprocess.run(
        ["curl", "-sS", "-w", "%{http_code}", style, arg, url], capture_output=True, text=True, timeout=60
    )
    assert again.stdout.endswith("404") and "already used" in again.stdout
    done = wait_done(http, job_id)
    assert done["status"] == "completed" and done["filename"] == "speech.wav"
    assert done["transcript"] == fake_text(FIXTURES / "speech.wav")


@pytest.mark.anyio
async def test_one_time_url_expires(expiring: InProcessServer) -> None:
    async with mcp_client(expiring) as mcp:
        made = (await mcp.call_tool("create_upload_url", {})).structured_content
    time.sleep(1.2)
    response = httpx.put(made["upload_url"], content=(FIXTURES / "short.wav").read_bytes())
    assert response.status_code == 404 and "expired" in response.json()["error"]["message"]


# -- streaming limits -------------------------------------------------------------------


def test_oversized_upload_is_refused_early_and_leaves_nothing(secured: InProcessServer, http: httpx.Client) -> None:
    before = set(storage_files(secured))

    def body() -> Iterator[bytes]:  # no Content-Length: the limit must trip while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(6 * 16):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    response = http.post("/transcribe", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "4 MiB" in response.json()["error"]["message"]
    # A declared length over the limit is refused before any body is read.
    with socket.create_connection(("127.0.0.1", secured.port), timeout=10) as sock:
        sock.sendall(
            f"POST /transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * 2**20}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    assert set(storage_files(secured)) == before
    assert http.get("/health").json()["status"] == "ok"


def test_too_long_audio_is_refused(secured: InProcessServer, http: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "long-silence.wav"
    with wave.open(str(path), "wb") as w:  # 3 minutes at 8 kHz 8-bit: 1.4 MB, over the 120 s limit
        w.setnchannels(1), w.setsampwidth(1), w.setframerate(8000)
        w.writeframes(b"\x80" * 8000 * 180)
    with open(path, "rb") as f:
        response = http.post("/transcribe", files={"file": ("long.wav", f)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "audio_too_long"
    assert "3.0 minutes" in response.json()["error"]["message"]
    assert list((secured.storage / "incoming").iterdir()) == []


def test_low_disk_space_answers_507_before_writing(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", min_free_mb=2**30) as srv, srv.client() as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            response = client.post("/transcribe", files={"file": ("short.wav", f)})
        assert response.status_code == 507
        assert "disk space" in response.json()["error"]["message"]
        assert list((srv.storage / "incoming").iterdir()) == []
        # The same check guards every way in.
        with open(FIXTURES / "short.wav", "rb") as f:
            openai_route = client.post("/v1/audio/transcriptions", files={"file": ("short.wav", f)})
        assert openai_route.status_code == 507
        assert client.get("/jobs").json()["total"] == 0


# -- input rules -------------------------------------------------------------------------


BAD_INPUTS = [
    # (description, request kwargs, status, error code)
    ("not audio", {"files": {"file": ("x.wav", b"hello world" * 10)}}, 400, "invalid_audio"),
    ("empty", {"files": {"file": ("x.wav", b"")}}, 400, "invalid_audio"),
    ("truncated", {"files": {"file": ("t.wav", (FIXTURES / "truncated.wav").read_bytes())}}, 400, "invalid_audio"),
    ("no file field", {"data": {"model": "tiny.en"}, "files": {"other": ("x", b"1")}}, 400, "invalid_input"),
    ("unknown model", {"data": {"model": "gigantic"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    # Which model paths the real registry refuses: test_client_model_names_come_from_the_registry.
    ("model path outside the model cache", {"data": {"model": "/etc/ssl/x.pt"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    ("model path with a user's home", {"data": {"model": "~nosuchuser\u00db/x.pt"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "unknown_model"),
    ("path-like job_id", {"data": {"job_id": "../../x"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("long job_id", {"data": {"job_id": "a" * 129}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("ftp callback", {"data": {"callback_url": "ftp://x/y"}, "files": {"file": ("s.wav", b"RIFF")}}, 400, "invalid_input"),
    ("not multipart", {"content": b"RIFF", "headers": {"content-type": "audio/wav"}}, 400, "invalid_input"),
    ("broken multipart", {"content": b"--b\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, "invalid_input"),
    ("no boundary", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400, "invalid_input"),
    ("two files", {"files": [("file", ("a.wav", b"RIFF")), ("file", ("b.wav", b"RIFF"))]}, 400, "invalid_input"),
    ("a file as an option", {"files": [("file", ("a.wav", b"RIFF")), ("model", ("m.pt", b"x"))]}, 400, "invalid_input"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "kwargs", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_table(
    secured: InProcessServer, http: httpx.Client, what: str, kwargs: dict, status: int, code: str
) -> None:
    response = http.post("/transcribe", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 20
    assert list((secured.storage / "incoming").iterdir()) == []


def test_client_model_names_come_from_the_registry(tmp_path: Path) -> None:
    """The real registry: a client names a packaged or downloadable model, never
    a path (not even inside the model cache, where converted/tiny.en.pt would
    load a second copy of tiny.en); the refusal names no server path. The
    operator's own settings may name any path."""
    from whisper_mcp.errors import UnknownModel
    from whisper_mcp.models.registry import ModelRegistry

    cache = tmp_path / "cache"
    (cache / "converted").mkdir(parents=True)
    inside = cache / "converted" / "tiny.en.pt"
    inside.write_bytes(b"weights")
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"weights")
    registry = ModelRegistry(cache, engine="openai")
    for name in (
        "converted/tiny.en.pt",
        str(inside),
        str(outside),
        "/etc/ssl/x.pt",
        "../elsewhere.pt",
        "~nosuchuser\u00db/x.pt",
    ):
        with pytest.raises(UnknownModel, match="Unknown model") as refused:
            registry.resolve(name)
        besides_the_name = str(refused.value).replace(repr(name), "")  # the client's own words come back
        assert str(tmp_path) not in besides_the_name and "cache" not in besides_the_name, refused.value
    assert registry.resolve("tiny.en").source in ("packaged", "download")
    assert registry.resolve(str(outside), trusted=True).source == "file"
    assert registry.resolve(str(inside), trusted=True).name == str(inside.resolve())


@pytest.mark.anyio
async def test_bad_base64_over_mcp(secured: InProcessServer) -> None:
    async with mcp_client(secured) as mcp:
        with pytest.raises(ToolError, match="not valid base64"):
            await mcp.call_tool("transcribe_wav", {"audio_base64": "%%%"})


def test_duplicate_job_id_same_audio_returns_existing(secured: InProcessServer, http: httpx.Client) -> None:
    def send(name: str) -> httpx.Response:
        with open(FIXTURES / name, "rb") as f:
            return http.post("/transcribe", files={"file": (name, f)}, data={"job_id": "dup-1"})

    assert send("short.wav").status_code == 202
    assert send("short.wav").json()["job_id"] == "dup-1"
    assert send("speech.wav").status_code == 409


def test_nothing_escapes_the_storage_folder_and_service_stays_up(secured: InProcessServer, http: httpx.Client) -> None:
    # Run after the tables above (module order): every refused and accepted upload so far.
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
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/v1/audio/transcriptions"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_needs_the_token(secured: InProcessServer, method: str, path: str) -> None:
    bare = httpx.request(method, secured.url + path)
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert "bearer token" in bare.json()["error"]["message"].lower()
    wrong = httpx.request(method, secured.url + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.request(method, secured.url + path, headers=AUTH)
    assert right.status_code != 401


def test_liveness_and_the_dashboard_page_need_no_token(secured: InProcessServer) -> None:
    assert httpx.get(f"{secured.url}/livez").json() == {"status": "ok"}
    page = httpx.get(f"{secured.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


@pytest.mark.anyio
async def test_mcp_works_with_the_token_only(secured: InProcessServer) -> None:
    async with mcp_client(secured) as mcp:
        assert (await mcp.call_tool("health", {})).structured_content["model_loaded"] is True
    with pytest.raises(MCPError, match="error response"):  # the 401 of /mcp, as the client reports it
        async with Client(f"{secured.url}/mcp") as bare:
            await bare.list_tools()


def test_foreign_origin_is_refused_on_mcp(secured: InProcessServer) -> None:
    headers = {**AUTH, **MCP_HEADERS}
    evil = httpx.post(f"{secured.url}/mcp", json=INIT, headers={**headers, "origin": "https://evil.example"})
    assert evil.status_code == 403 and "not allowed" in evil.json()["error"]["message"]
    for origin in (f"http://127.0.0.1:{secured.port}", f"http://localhost:{secured.port}", "https://dashboard.example"):
        ok = httpx.post(f"{secured.url}/mcp", json=INIT, headers={**headers, "origin": origin})
        assert ok.status_code == 200, origin


def test_foreign_origin_may_read_but_not_change(secured: InProcessServer) -> None:
    evil = {**AUTH, "origin": "https://evil.example"}
    assert httpx.delete(f"{secured.url}/jobs/x", headers=evil).status_code == 403
    assert httpx.post(f"{secured.url}/transcribe", headers=evil, files={"file": ("s.wav", b"RIFF")}).status_code == 403
    assert httpx.get(f"{secured.url}/health", headers=evil).status_code == 200


def test_same_origin_under_another_host_name_needs_the_token(
    secured: InProcessServer, fake_server: InProcessServer
) -> None:
    """The dashboard opened via a LAN name may use /mcp on a token server; without
    a token, a hostile page that rebinds its name to us may not."""
    with_token = httpx.post(
        f"{secured.url}/mcp",
        json=INIT,
        headers={
            **MCP_HEADERS, **AUTH,
            "host": f"transcriber.lan:{secured.port}", "origin": f"http://transcriber.lan:{secured.port}",
        },
    )  # fmt: skip
    assert with_token.status_code == 200
    no_token = httpx.post(
        f"{fake_server.url}/mcp",
        json=INIT,
        headers={
            **MCP_HEADERS,
            "host": f"rebound.example:{fake_server.port}", "origin": f"http://rebound.example:{fake_server.port}",
        },
    )  # fmt: skip
    assert no_token.status_code == 421  # refused for its Host already (DNS rebinding), before its Origin
    # ... while its own loopback origin works without a token.
    own = httpx.post(
        f"{fake_server.url}/mcp", json=INIT, headers={**MCP_HEADERS, "origin": f"http://127.0.0.1:{fake_server.port}"}
    )
    assert own.status_code == 200


# -- storage hygiene --------------------------------------------------------------------------


def test_audio_is_deleted_when_the_job_ends(secured: InProcessServer, http: httpx.Client) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        job = http.post("/transcribe", files={"file": ("s.wav", f)}, data={"cache": "false"}).json()
    assert wait_done(http, job["job_id"])["status"] == "completed"
    deadline = time.monotonic() + 5
    while list((secured.storage / "audio").iterdir()):
        assert time.monotonic() < deadline, list((secured.storage / "audio").iterdir())
        time.sleep(0.02)


def test_keep_audio_keeps_it(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", delete_audio=False) as srv, srv.client() as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            job = client.post("/transcribe", files={"file": ("s.wav", f)}).json()
        assert wait_done(client, job["job_id"])["status"] == "completed"
        kept = list((srv.storage / "audio").iterdir())
        assert len(kept) == 1 and kept[0].read_bytes() == (FIXTURES / "short.wav").read_bytes()


def test_openapi_describes_the_routes(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/transcribe", "/status/{job_id}", "/download/{job_id}", "/jobs", "/health", "/upload/{secret}"} <= set(
        spec["paths"]
    )


def test_ended_jobs_expire_after_retention(tmp_path: Path) -> None:
    # 0.00002 days = 1.7 s; sweeps every 0.2 s.
    with InProcessServer.start(tmp_path / "storage", retention_days=0.00002, housekeeping_seconds=0.2) as srv:
        with srv.client() as client:
            with open(FIXTURES / "short.wav", "rb") as f:
                job = client.post("/transcribe", files={"file": ("s.wav", f)}).json()
            assert wait_done(client, job["job_id"])["status"] == "completed"
            assert list((srv.storage / "results").iterdir())
            deadline = time.monotonic() + 10
            while client.get(f"/status/{job['job_id']}").status_code != 404:
                assert time.monotonic() < deadline, "the job never expired"
                time.sleep(0.1)
            assert list((srv.storage / "results").iterdir()) == []
            assert client.get(f"/download/{job['job_id']}").status_code == 404
            assert client.get("/health").json()["status"] == "ok"
