"""End to end: the stdio bridge (``python -m whisper_mcp.client.bridge``) started by a real
MCP stdio client, uploading a local file to a real server with the real model.
Its tools' errors, token and cancel handling: tests/unit/test_bridge.py (in process)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from helpers import FIXTURES, ROOT, Progress, ServerProcess, wait_over_mcp, words

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def bridge(url: str, output_dir: Path, cwd: Path, *extra: str) -> Client:
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "whisper_mcp.client.bridge", "--url", url, "--output-dir", str(output_dir), *extra],
        cwd=str(cwd),
        keep_alive=False,
    )
    return Client(transport, timeout=120)


async def test_transcribes_a_local_file_into_the_output_folder(server: ServerProcess, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(FIXTURES / "speech.wav", work / "standup_meeting.wav")
    out = tmp_path / "transcriptions"
    repo_before = {p.name for p in ROOT.iterdir()}

    # Queue with one bridge process ...
    async with bridge(server.url, out, work) as client:
        tools = {t.name: t for t in await client.list_tools()}
        assert {"transcribe_wav", "check_transcription_status"} <= set(tools)
        params = tools["transcribe_wav"].input_schema["properties"]
        assert {"filename", "model", "language", "job_id", "priority"} <= set(params)
        assert all(p.get("description") for p in params.values())
        assert "wait_seconds" in tools["check_transcription_status"].input_schema["properties"]

        # A relative path is resolved against the bridge's working folder.
        queued = (await client.call_tool("transcribe_wav", {"filename": "standup_meeting.wav"})).structured_content
    assert queued["success"] is True
    assert queued["status"] == "queued" or queued.get("cached"), queued
    assert queued["service_url"] == server.url
    assert "check_transcription_status" in queued["message"]
    job_id = queued["job_id"]
    status_file = out / "standup_meeting.transcribing.txt"
    assert queued["status_file"] == str(status_file)
    assert status_file.is_file()
    note = status_file.read_text()
    assert note.startswith("QUEUED") and job_id in note
    assert json.loads((out / ".whisper-mcp-jobs.json").read_text())[job_id]["filename"] == str(
        work / "standup_meeting.wav"
    )

    # ... and collect with a fresh one: the job map survives the restart.
    updates: list[Progress] = []
    async with bridge(server.url, out, tmp_path) as client:
        done = await wait_over_mcp(client, job_id, updates)
    assert done["status"] == "completed", done
    assert done["success"] is True
    transcript_file = out / "standup_meeting.txt"
    assert done["transcript_file"] == str(transcript_file)
    text = transcript_file.read_text()
    assert text == done["transcript"]
    assert len(words(text) & {"transcription", "model", "loaded", "meeting", "morning", "report", "friday"}) >= 4, text
    assert not status_file.exists()
    assert updates and updates[-1][0] == 1.0
    assert job_id not in json.loads((out / ".whisper-mcp-jobs.json").read_text())
    # No stray temporary files; nothing written into the repository.
    assert sorted(p.name for p in out.iterdir()) == [".whisper-mcp-jobs.json", "standup_meeting.txt"]
    assert {p.name for p in ROOT.iterdir()} == repo_before
