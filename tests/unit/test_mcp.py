"""The MCP tools' plumbing, in process: the real app (MCP at /mcp over
streamable HTTP, queue, worker, SQLite) over a fake engine, driven by the real
fastmcp client. What the real model hears is tested in tests/e2e."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from whisper_mcp.engines.base import BatchItem

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, Progress, wait_over_mcp

pytestmark = pytest.mark.anyio

SHORT_SECONDS = 2.4  # short.wav


def b64(name: str | Path) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


class SlowEngine(FakeEngine):
    """Each window of each job takes ``window_seconds``: progress arrives over time."""

    def __init__(self, window_seconds: float, windows: int) -> None:
        super().__init__(windows=windows)
        self.window_seconds = window_seconds

    def transcribe_batch(self, items: Sequence[BatchItem], model: Any, options: Any) -> list:
        def slowed(report: Any) -> Any:
            def on_progress(fraction: float) -> None:
                time.sleep(self.window_seconds)
                if report is not None:
                    report(fraction)

            return on_progress

        return super().transcribe_batch(
            [dataclasses.replace(item, on_progress=slowed(item.on_progress)) for item in items], model, options
        )


async def test_lists_the_tools_with_descriptions(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        tools = {t.name: t for t in await client.list_tools()}
    assert {"transcribe_wav", "check_transcription_status", "health"} <= set(tools)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40, tool.name
    params = tools["transcribe_wav"].input_schema["properties"]
    assert set(params) >= {"audio_base64", "filename", "job_id", "model", "language", "callback_url"}
    assert all(p.get("description") for p in params.values())
    assert "wait_seconds" in tools["check_transcription_status"].input_schema["properties"]


async def test_the_mcp_app_is_built_on_the_first_mcp_request(tmp_path: Path) -> None:
    """REST and /health answer without it; the first MCP request builds it
    (its module imported off the event loop), later ones reuse it."""
    with InProcessServer.start(tmp_path / "storage") as server:
        (endpoint,) = [route.endpoint for route in server.app.routes if getattr(route, "path", None) == "/mcp"]
        with server.client() as http:
            assert http.get("/health").json()["model_loaded"] is True
        assert endpoint.loaded is False
        for _ in range(2):
            async with Client(f"{server.url}/mcp") as client:
                assert (await client.call_tool("health", {})).structured_content["model_loaded"] is True
            assert endpoint.loaded is True


async def test_transcribe_then_wait_for_transcript(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        queued = (
            await client.call_tool(
                "transcribe_wav",
                {"cache": False, "audio_base64": b64("short.wav"), "filename": "short.wav", "language": "en"},
            )
        ).structured_content
        assert queued["status"] == "queued" and queued["filename"] == "short.wav"
        done = (
            await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 10})
        ).structured_content
        assert done["status"] == "completed", done
        assert done["transcript"] == f"fake transcript of {SHORT_SECONDS} seconds\n"
        assert done["language"] == "en" and done["audio_seconds"] == pytest.approx(SHORT_SECONDS, abs=0.05)
        health = (await client.call_tool("health", {})).structured_content
        assert health["model_loaded"] is True and health["model"] == "tiny.en"
        assert health["engine"] == "fake" and health["queue_size"] == 0
    assert len(fake_server.engine.batches) == 1
    # The same job through REST: one queue behind both doors.
    assert httpx.get(f"{fake_server.url}/download/{queued['job_id']}").text == done["transcript"]


async def test_wait_sends_progress_notifications(tmp_path: Path) -> None:
    updates: list[Progress] = []
    engine = SlowEngine(window_seconds=0.15, windows=4)
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        async with Client(f"{srv.url}/mcp") as client:
            queued = (await client.call_tool("transcribe_wav", {"audio_base64": b64("short.wav")})).structured_content
            done = await wait_over_mcp(client, queued["job_id"], updates, wait_seconds=20)
    assert done["status"] == "completed", done
    assert updates, "no progress notifications while waiting"
    fractions = [p for p, _, _ in updates]
    assert fractions == sorted(fractions)
    assert {0.25, 0.5, 0.75} & set(fractions), updates  # the windows' own fractions came through
    assert all(total == 1.0 for _, total, _ in updates)
    # The status, and once text is decoded, the newest of it.
    statuses = {(message or "").split(":")[0] for _, _, message in updates}
    assert statuses <= {"queued", "processing"} and "processing" in statuses, updates


async def test_wait_returns_when_time_is_up(fake_server: InProcessServer) -> None:
    fake_server.engine.gate.clear()  # the job starts and stays running
    try:
        async with Client(f"{fake_server.url}/mcp") as client:
            queued = (await client.call_tool("transcribe_wav", {"audio_base64": b64("short.wav")})).structured_content
            started = time.monotonic()
            early = (
                await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 0.5})
            ).structured_content
            assert 0.4 < time.monotonic() - started < 5
            assert early["status"] in ("queued", "processing")
            assert "transcript" not in early
            fake_server.engine.gate.set()
            final = (
                await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 10})
            ).structured_content
            assert final["status"] == "completed" and final["transcript"].startswith("fake transcript")
    finally:
        fake_server.engine.gate.set()


async def test_wait_is_capped_by_max_wait_seconds(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine, max_wait_seconds=0.3) as srv:
        try:
            async with Client(f"{srv.url}/mcp") as client:
                queued = (
                    await client.call_tool("transcribe_wav", {"audio_base64": b64("short.wav")})
                ).structured_content
                started = time.monotonic()
                record = (
                    await client.call_tool(
                        "check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 45}
                    )
                ).structured_content
                assert time.monotonic() - started < 5
                assert record["status"] in ("queued", "processing")
        finally:
            engine.gate.set()


@pytest.mark.parametrize(
    ("tool", "args", "phrase"),
    [
        ("transcribe_wav", {"audio_base64": "not base64!!"}, "not valid base64"),
        ("transcribe_wav", {"audio_base64": base64.b64encode(b"hello, not audio").decode()}, "audio format"),
        ("transcribe_wav", {"audio_base64": ""}, "empty"),
        ("transcribe_wav", {"audio_base64": "QUJD", "model": "nope"}, "unknown model"),
        ("transcribe_wav", {}, "exactly one of audio_base64"),
        ("transcribe_wav", {"audio_base64": "QUJD", "job_id": "no spaces"}, "job_id must be"),
        ("transcribe_wav", {"audio_base64": "QUJD", "callback_url": "ftp://x"}, "callback_url must be"),
        ("check_transcription_status", {"job_id": "no-such-job"}, "no job with id"),
    ],
)
async def test_tool_errors_are_clear(
    fake_server: InProcessServer, tool: str, args: dict[str, Any], phrase: str
) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        with pytest.raises(ToolError) as info:
            await client.call_tool(tool, args)
        assert phrase.lower() in str(info.value).lower()
        assert (await client.call_tool("health", {})).structured_content["status"] == "ok"
    assert fake_server.engine.batches == []  # nothing was queued
    assert list((fake_server.storage / "incoming").iterdir()) == []  # nothing left behind
