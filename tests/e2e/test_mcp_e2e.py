"""End to end over MCP with real clients and the real model: the streamable
HTTP client (with progress notifications) and a legacy `initialize` client.
The tools' plumbing and errors are tested in process: tests/unit/test_mcp.py."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import mcp
import pytest
from fastmcp import Client

from helpers import FIXTURES, LONG_AUDIO, Progress, ServerProcess, wait_over_mcp, words

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def b64(name: str | Path) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


LONG_WORDS = {"weekly", "planning", "meeting", "budget", "finance", "december"}


async def test_transcribe_wait_with_progress_then_rest(server: ServerProcess) -> None:
    """Streamable HTTP (no initialize): queue long.mp3, see the wait time out
    while it runs, then wait with progress notifications to the transcript."""
    updates: list[Progress] = []
    async with Client(f"{server.url}/mcp") as client:
        queued = (
            await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64(LONG_AUDIO)})
        ).structured_content
        assert queued["status"] == "queued"
        early = (
            await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 0.5})
        ).structured_content
        assert early["status"] in ("queued", "processing")
        assert "transcript" not in early
        done = await wait_over_mcp(client, queued["job_id"], updates, wait_seconds=50)
        assert done["status"] == "completed", done
        assert LONG_WORDS <= words(done["transcript"]), done["transcript"]
        health = (await client.call_tool("health", {})).structured_content
        assert health["model_loaded"] is True and health["model"] == "tiny.en"
    assert updates, "no progress notifications while waiting"
    fractions = [p for p, _, _ in updates]
    assert fractions == sorted(fractions)
    assert any(0 < p < 1 for p in fractions), updates
    # The same job through REST: one queue behind both doors.
    assert httpx.get(f"{server.url}/download/{queued['job_id']}").text == done["transcript"]


async def test_legacy_handshake_client(server: ServerProcess) -> None:
    """Clients that still send `initialize` (older Codex, Inspector) work too."""
    async with mcp.Client(f"{server.url}/mcp", mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "transcribe_wav" in names
        result = await client.call_tool("transcribe_wav", {"cache": False, "audio_base64": b64("short.wav")})
        assert not result.is_error
        job_id = result.structured_content["job_id"]
        status = await client.call_tool("check_transcription_status", {"job_id": job_id, "wait_seconds": 45})
        assert status.structured_content["status"] == "completed", status.structured_content
        assert {"hello", "world", "testing"} <= words(status.structured_content["transcript"])
