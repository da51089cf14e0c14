"""The stdio bridge's tools (whisper_mcp.client.bridge), in process: the bridge's
FastMCP server driven by the fastmcp client over its in-memory transport,
talking HTTP to the real app over a fake engine. The bridge as a stdio
subprocess, against a real server and model: tests/e2e/test_bridge_e2e.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from whisper_mcp.cli import main as whisper_mcp_main
from whisper_mcp.client.bridge import JOBS_FILE, build_bridge

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, Progress, free_port, wait_over_mcp

pytestmark = pytest.mark.anyio

SPEECH = "fake transcript of 7.6 seconds\n"


def bridge(url: str, output_dir: Path, token: str | None = None) -> Client:
    return Client(build_bridge(url, token, output_dir), timeout=30)


async def test_queue_then_collect_into_the_output_folder(tmp_path: Path) -> None:
    audio = tmp_path / "standup meeting.wav"
    shutil.copy(FIXTURES / "speech.wav", audio)
    out = tmp_path / "transcriptions"
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        async with bridge(srv.url, out) as client:
            tools = {t.name: t for t in await client.list_tools()}
            assert set(tools) == {"transcribe_wav", "check_transcription_status"}
            params = tools["transcribe_wav"].input_schema["properties"]
            assert set(params) == {"filename", "model", "language", "job_id", "priority", "diarize", "num_speakers"}
            assert all(p.get("description") for p in params.values())

            queued = (
                await client.call_tool("transcribe_wav", {"filename": str(audio), "job_id": "standup-1"})
            ).structured_content
            assert queued["success"] is True and queued["status"] == "queued" and queued["job_id"] == "standup-1"
            assert queued["service_url"] == srv.url
            status_file = out / "standup meeting.transcribing.txt"
            assert queued["status_file"] == str(status_file)
            assert status_file.read_text().startswith("QUEUED - uploaded to transcription service as job standup-1")
            assert json.loads((out / JOBS_FILE).read_text())["standup-1"]["filename"] == str(audio)

            # Still running when the wait ends: the status file says so.
            assert engine.started.wait(10)
            running = (
                await client.call_tool("check_transcription_status", {"job_id": "standup-1", "wait_seconds": 0.2})
            ).structured_content
            assert running["success"] is True and running["status"] == "processing"
            assert "call check_transcription_status again" in running["message"]
            assert status_file.read_text().startswith("PROCESSING - job standup-1, 0%")

        engine.gate.set()
        updates: list[Progress] = []
        # A fresh bridge collects: the job map survives.
        async with bridge(srv.url, out) as client:
            done = await wait_over_mcp(client, "standup-1", updates, wait_seconds=10)
    assert done["status"] == "completed" and done["success"] is True, done
    transcript = out / "standup meeting.txt"
    assert done["transcript_file"] == str(transcript)
    assert transcript.read_text() == done["transcript"] == SPEECH
    assert done["language"] == "en" and done["audio_seconds"] == pytest.approx(7.56, abs=0.05)
    assert updates and updates[-1] == (1.0, 1.0, "completed")
    assert not status_file.exists()
    assert json.loads((out / JOBS_FILE).read_text()) == {}
    assert sorted(p.name for p in out.iterdir()) == [JOBS_FILE, "standup meeting.txt"]


async def test_cancelled_job_is_reported_and_marked(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "short.wav", tmp_path / "short.wav")
    out = tmp_path / "out"
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        async with bridge(srv.url, out) as client:
            blocker = (
                await client.call_tool("transcribe_wav", {"filename": str(FIXTURES / "speech.wav")})
            ).structured_content
            queued = (
                await client.call_tool("transcribe_wav", {"filename": str(tmp_path / "short.wav")})
            ).structured_content
            assert queued["queue_position"] == 1
            httpx.delete(f"{srv.url}/jobs/{queued['job_id']}").raise_for_status()
            ended = (
                await client.call_tool("check_transcription_status", {"job_id": queued["job_id"]})
            ).structured_content
        engine.gate.set()
    assert ended["success"] is False and ended["status"] == "cancelled" and ended["error"]
    assert (out / "short.transcribing.txt").read_text().startswith(f"CANCELLED - job {queued['job_id']} cancelled")
    assert queued["job_id"] not in json.loads((out / JOBS_FILE).read_text())
    assert blocker["job_id"] in json.loads((out / JOBS_FILE).read_text())


async def test_missing_or_unusable_file_is_a_clear_tool_error(fake_server: InProcessServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with bridge(fake_server.url, out) as client:
        with pytest.raises(ToolError, match="No such file: .*nowhere.wav"):
            await client.call_tool("transcribe_wav", {"filename": str(tmp_path / "nowhere.wav")})
        with pytest.raises(ToolError, match="Not a regular file"):
            await client.call_tool("transcribe_wav", {"filename": str(tmp_path)})
        # What the service refuses comes back in its own words.
        shutil.copy(FIXTURES / "not_audio.bin", tmp_path / "notes.wav")
        with pytest.raises(ToolError) as refused:
            await client.call_tool("transcribe_wav", {"filename": str(tmp_path / "notes.wav")})
        assert "not a recognised audio format" in str(refused.value)
        with pytest.raises(ToolError, match="Unknown model 'nope'"):
            await client.call_tool("transcribe_wav", {"filename": str(FIXTURES / "short.wav"), "model": "nope"})
        with pytest.raises(ToolError, match="No job with id 'bridge-no-such-job'"):
            await client.call_tool("check_transcription_status", {"job_id": "bridge-no-such-job"})
    assert fake_server.engine.batches == []
    assert not out.exists() or not list(out.glob("*.transcribing.txt"))


async def test_unreachable_service_is_a_clear_tool_error(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "speech.wav", tmp_path / "speech.wav")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "out"
    async with bridge(url, out) as client:
        with pytest.raises(ToolError, match=f"Could not reach the transcription service at {url}"):
            await client.call_tool("transcribe_wav", {"filename": str(tmp_path / "speech.wav")})
        with pytest.raises(ToolError, match=f"Could not reach the transcription service at {url}"):
            await client.call_tool("check_transcription_status", {"job_id": "some-job", "wait_seconds": 5})
    assert not (out / "speech.transcribing.txt").exists()


async def test_token_is_sent_and_a_refusal_explained(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with InProcessServer.start(tmp_path / "storage", token="bridge-secret") as srv:
        async with bridge(srv.url, out) as client:
            with pytest.raises(
                ToolError, match=r"refused the request.*the bridge has no token: set --token or WHISPER_MCP_TOKEN"
            ):
                await client.call_tool("transcribe_wav", {"filename": str(FIXTURES / "short.wav")})
        async with bridge(srv.url, out, token="bridge-secret") as client:
            queued = (
                await client.call_tool("transcribe_wav", {"filename": str(FIXTURES / "short.wav")})
            ).structured_content
            done = (
                await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 10})
            ).structured_content
    assert done["status"] == "completed" and (out / "short.txt").read_text() == done["transcript"]


def test_whisper_mcp_bridge_subcommand_hands_its_arguments_over(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        whisper_mcp_main(["bridge", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: whisper-mcp bridge")
    assert "--output-dir" in out and "--url" in out and "--token" in out
