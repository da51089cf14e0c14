"""End to end over MCP (streamable HTTP) with real clients and the real model."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import mcp
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, words

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def b64(name: str | Path) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


async def wait_with_progress(client: Client, job_id: str, on_progress: Any = None, calls: int = 4) -> dict:
    """What an agent does: wait in bounded calls until the job has ended."""
    for _ in range(calls):
        record = (
            await client.call_tool(
                "check_transcription_status",
                {"job_id": job_id, "wait_seconds": 50},
                progress_handler=on_progress,
            )
        ).data
        if record["status"] in ("completed", "failed"):
            break
    return record


async def test_lists_the_three_tools_with_descriptions(server: ServerProcess) -> None:
    async with Client(f"{server.url}/mcp") as client:
        tools = {t.name: t for t in await client.list_tools()}
    assert {"transcribe_wav", "check_transcription_status", "health"} <= set(tools)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
    params = tools["transcribe_wav"].input_schema["properties"]
    assert set(params) >= {"audio_base64", "filename", "job_id", "model", "language", "callback_url"}
    assert all(p.get("description") for p in params.values())
    assert "wait_seconds" in tools["check_transcription_status"].input_schema["properties"]


async def test_transcribe_then_wait_for_transcript(server: ServerProcess) -> None:
    async with Client(f"{server.url}/mcp") as client:
        queued = (await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64("short.wav"), "filename": "short.wav"})).data
        assert queued["status"] == "queued"
        done = (
            await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 45})
        ).data
        assert done["status"] == "completed", done
        assert {"hello", "world", "testing"} <= words(done["transcript"])
        health = (await client.call_tool("health", {})).data
        assert health["model_loaded"] is True and health["model"] == "tiny.en"
    # The same job through REST: one queue behind both doors.
    assert httpx.get(f"{server.url}/download/{queued['job_id']}").text == done["transcript"]


async def test_wait_sends_progress_notifications(server: ServerProcess) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with Client(f"{server.url}/mcp") as client:
        queued = (await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64(LONG_AUDIO)})).data
        done = await wait_with_progress(client, queued["job_id"], on_progress)
    assert done["status"] == "completed", done
    assert updates, "no progress notifications while waiting"
    fractions = [p for p, _, _ in updates]
    assert fractions == sorted(fractions)
    assert any(0 < p < 1 for p in fractions), updates


async def test_wait_returns_when_time_is_up(server: ServerProcess) -> None:
    async with Client(f"{server.url}/mcp") as client:
        queued = (await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64(LONG_AUDIO)})).data
        early = (
            await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 0.5})
        ).data
        assert early["status"] in ("queued", "processing")
        assert "transcript" not in early
        final = await wait_with_progress(client, queued["job_id"])
        assert final["status"] == "completed"


@pytest.mark.parametrize(
    ("tool", "args", "phrase"),
    [
        ("transcribe_wav", {"audio_base64": "not base64!!"}, "not valid base64"),
        ("transcribe_wav", {"audio_base64": base64.b64encode(b"hello, not audio").decode()}, "audio format"),
        ("transcribe_wav", {"audio_base64": ""}, "empty"),
        ("transcribe_wav", {"audio_base64": "QUJD", "model": "nope"}, "unknown model"),
        ("check_transcription_status", {"job_id": "no-such-job"}, "no job with id"),
    ],
)
async def test_tool_errors_are_clear(server: ServerProcess, tool: str, args: dict[str, Any], phrase: str) -> None:
    async with Client(f"{server.url}/mcp") as client:
        with pytest.raises(ToolError) as info:
            await client.call_tool(tool, args)
        assert phrase.lower() in str(info.value).lower()
        assert (await client.call_tool("health", {})).data["status"] == "ok"


async def test_legacy_handshake_client(server: ServerProcess) -> None:
    """Clients that still send `initialize` (older Codex, Inspector) work too."""
    async with mcp.Client(f"{server.url}/mcp", mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "transcribe_wav" in names
        result = await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64("short.wav")})
        assert not result.is_error
        job_id = result.structured_content["job_id"]
        status = await client.call_tool("check_transcription_status", {"job_id": job_id, "wait_seconds": 45})
        assert status.structured_content["status"] == "completed"
