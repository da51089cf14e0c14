"""Recoverable upload mistakes lose no upload, reserved job ids stay reserved,
junk upload ids cost nothing, and the upload limit counts every byte."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from helpers import FIXTURES, InProcessServer, wait_done

pytestmark = pytest.mark.anyio


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_one_time_url_survives_a_refused_upload(
    fake_server: InProcessServer, fake_client: httpx.Client
) -> None:
    async with Client(f"{fake_server.url}/mcp") as mcp:
        made = (await mcp.call_tool("create_upload_url", {"job_id": "retry-me"})).structured_content
    url = made["upload_url"]
    refused = httpx.put(url, content=(FIXTURES / "not_audio.bin").read_bytes())
    assert refused.status_code == 400 and "not a recognised audio format" in refused.json()["error"]["message"]
    # Open again: the job id still waits for its upload, and the retry works.
    assert fake_client.get("/status/retry-me").json()["status"] == "waiting_for_upload"
    accepted = httpx.put(url, content=(FIXTURES / "short.wav").read_bytes())
    assert accepted.status_code == 202 and accepted.json()["job_id"] == "retry-me"
    assert wait_done(fake_client, "retry-me")["status"] == "completed"
    # Used up once its job is queued.
    again = httpx.put(url, content=(FIXTURES / "short.wav").read_bytes())
    assert again.status_code == 404
    assert list((fake_server.storage / "incoming").iterdir()) == []


async def test_a_complete_chunked_upload_survives_a_failed_submission(
    fake_server: InProcessServer, fake_client: httpx.Client
) -> None:
    data = (FIXTURES / "short.wav").read_bytes()
    other = (FIXTURES / "speech.wav").read_bytes()
    taken = fake_client.post("/transcribe", files={"file": ("o.wav", other)}, data={"job_id": "taken"})
    assert taken.status_code == 202
    async with Client(f"{fake_server.url}/mcp") as mcp:
        begun = (
            await mcp.call_tool("begin_upload", {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        ).structured_content
        upload_id = begun["upload_id"]
        await mcp.call_tool("upload_chunk", {"upload_id": upload_id, "offset": 0, "data_base64": b64(data)})
        with pytest.raises(ToolError, match="klingon"):
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id, "language": "klingon"})
        # A failure after the upload was taken (a job id used by other audio) keeps it too.
        with pytest.raises(ToolError, match="already used by a job with different audio"):
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id, "job_id": "taken"})
        queued = (
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id, "language": "en", "cache": False})
        ).structured_content
        assert wait_done(fake_client, queued["job_id"])["status"] == "completed"
        with pytest.raises(ToolError, match="No open upload"):
            await mcp.call_tool("transcribe_wav", {"upload_id": upload_id})
    assert not (fake_server.storage / "uploads" / upload_id).exists()
    assert list((fake_server.storage / "incoming").iterdir()) == []


async def test_create_upload_url_reserves_its_job_id(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    async with Client(f"{fake_server.url}/mcp") as mcp:
        made = (await mcp.call_tool("create_upload_url", {"job_id": "mine"})).structured_content
        with pytest.raises(ToolError, match="reserved by a one-time upload URL"):
            await mcp.call_tool(
                "transcribe_wav", {"audio_base64": b64((FIXTURES / "speech.wav").read_bytes()), "job_id": "mine"}
            )
    with open(FIXTURES / "speech.wav", "rb") as f:
        stolen = fake_client.post("/transcribe", files={"file": ("s.wav", f)}, data={"job_id": "mine"})
    assert stolen.status_code == 409 and "reserved" in stolen.json()["error"]["message"]
    assert httpx.put(made["upload_url"], content=(FIXTURES / "short.wav").read_bytes()).status_code == 202
    assert wait_done(fake_client, "mine")["audio_seconds"] < 5  # short.wav, not the other client's speech.wav


async def test_junk_upload_ids_never_reach_the_database(fake_server: InProcessServer) -> None:
    store = fake_server.service.uploads._store
    looked_up: list[str] = []
    real_get = store.get

    def get(upload_id: str):  # type: ignore[no-untyped-def]
        looked_up.append(upload_id)
        return real_get(upload_id)

    store.get = get  # type: ignore[method-assign]
    try:
        async with Client(f"{fake_server.url}/mcp") as mcp:
            for i in range(5):
                junk = f"{i}" + "x" * (2_500_000 if i == 0 else 40)
                with pytest.raises(ToolError, match="No open upload") as refused:
                    await mcp.call_tool("upload_chunk", {"upload_id": junk, "offset": 0, "data_base64": "AAAA"})
                assert len(str(refused.value)) < 300  # the id is not echoed whole
            with pytest.raises(ToolError, match="No open upload"):
                await mcp.call_tool("transcribe_wav", {"upload_id": "y" * 100_000})
            # A well-formed id is looked up.
            with pytest.raises(ToolError, match="No open upload"):
                await mcp.call_tool("upload_chunk", {"upload_id": "0" * 32, "offset": 0, "data_base64": "AAAA"})
    finally:
        del store.get
    assert looked_up == ["0" * 32]


# -- the upload limit counts every byte of the body --------------------------------------


@pytest.fixture
def small_limit(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", max_upload_mb=1) as srv:
        yield srv


def _streamed_form(field: str, filler: int) -> tuple[Iterator[bytes], dict[str, str]]:
    """A multipart body with the real file and ``filler`` bytes in another
    field, sent chunked (no Content-Length, so only counting can stop it)."""
    boundary = "lim1t"
    audio = (FIXTURES / "short.wav").read_bytes()

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'.encode()
        for _ in range(filler // 65536):
            yield b"z" * 65536
        yield (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.wav"\r\n\r\n'.encode()
            + audio
            + f"\r\n--{boundary}--\r\n".encode()
        )

    return body(), {"content-type": f"multipart/form-data; boundary={boundary}"}


async def test_ignored_form_fields_count_towards_the_upload_limit(small_limit: InProcessServer) -> None:
    async with Client(f"{small_limit.url}/mcp") as mcp:
        url = (await mcp.call_tool("create_upload_url", {})).structured_content["upload_url"]
    with small_limit.client() as http:
        for target in ("/transcribe", "/v1/audio/transcriptions", url):
            body, headers = _streamed_form("unused", 3 * 2**20)
            answer = http.post(target, content=body, headers=headers)
            assert answer.status_code == 413, (target, answer.text)
            assert "upload limit of 1 MiB" in answer.text
        # Under the limit, the same shape is accepted.
        body, headers = _streamed_form("unused", 65536)
        assert http.post("/transcribe", content=body, headers=headers).status_code == 202
    assert list((small_limit.storage / "incoming").iterdir()) == []
