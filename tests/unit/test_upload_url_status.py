"""The status of a job id that create_upload_url issued, before its file
arrives: ``waiting_for_upload`` (with ``expires_at``) the same over REST, the
MCP tool and the command line; then the job once the file is sent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from whisper_mcp.client.cli import add_client_commands, run_client_command
from whisper_mcp.client.http import ClientError, ServiceClient

from helpers import FIXTURES, InProcessServer

pytestmark = pytest.mark.anyio


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client_command(parser.parse_args(argv))


async def test_an_unused_upload_url_is_waiting_for_its_upload(
    fake_server: InProcessServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fake_server.url
    async with Client(f"{url}/mcp") as mcp:
        made = (
            await mcp.call_tool("create_upload_url", {"filename": "standup.wav", "job_id": "standup"})
        ).structured_content

        rest = httpx.get(f"{url}/status/standup")
        assert rest.status_code == 200
        record = rest.json()
        assert record["status"] == "waiting_for_upload"
        assert (record["job_id"], record["filename"], record["expires_at"]) == (
            "standup",
            "standup.wav",
            made["expires_at"],
        )
        assert "create_upload_url" in record["note"]

        tool = (await mcp.call_tool("check_transcription_status", {"job_id": "standup"})).structured_content
        assert tool is not None and tool["status"] == "waiting_for_upload" and tool["expires_at"] == made["expires_at"]

        # Waiting on it ends at the deadline with the same answer; the wait
        # sleeps on job changes, it does not poll the store.
        lookups = 0
        real = fake_server.service.uploads.url_for_job

        async def counted(job_id: str):  # type: ignore[no-untyped-def]
            nonlocal lookups
            lookups += 1
            return await real(job_id)

        fake_server.service.uploads.url_for_job = counted  # type: ignore[method-assign]
        waited = (
            await mcp.call_tool("check_transcription_status", {"job_id": "standup", "wait_seconds": 1})
        ).structured_content
        fake_server.service.uploads.url_for_job = real  # type: ignore[method-assign]
        assert waited is not None and waited["status"] == "waiting_for_upload"
        assert 1 <= lookups <= 3

        assert cli(["status", "standup", "--url", url]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "waiting_for_upload"
        with ServiceClient(url) as client:
            with pytest.raises(ClientError, match="did not finish within"):
                client.wait("standup", poll=0.05, timeout=0.2)

        # Cancel and download say why there is nothing yet.
        for response in (httpx.delete(f"{url}/jobs/standup"), httpx.get(f"{url}/download/standup")):
            assert response.status_code == 404
            assert "waiting for its upload to the one-time URL" in response.json()["error"]["message"]

        # A lost URL is replaced by asking again with the same id; either one works.
        again = (
            await mcp.call_tool("create_upload_url", {"filename": "standup.wav", "job_id": "standup"})
        ).structured_content
        assert again["upload_url"] != made["upload_url"]
        assert httpx.get(f"{url}/status/standup").json()["expires_at"] == again["expires_at"]

        sent = httpx.post(made["upload_url"], content=(FIXTURES / "short.wav").read_bytes())
        assert sent.status_code == 202, sent.text
        with ServiceClient(url) as client:
            assert client.wait("standup", poll=0.02, timeout=30)["status"] == "completed"


async def test_a_used_or_unknown_id_says_so(fake_server: InProcessServer, tmp_path: Path) -> None:
    async with Client(f"{fake_server.url}/mcp") as mcp:
        made = (await mcp.call_tool("create_upload_url", {"job_id": "junk"})).structured_content
    refused = httpx.post(made["upload_url"], content=(FIXTURES / "not_audio.bin").read_bytes())
    assert refused.status_code == 400
    # A refused upload leaves the URL open for a retry.
    assert httpx.get(f"{fake_server.url}/status/junk").json()["status"] == "waiting_for_upload"
    # While an upload arrives, the id is neither waiting nor unknown.
    record = await fake_server.service.uploads.url_for_job("junk")
    assert record is not None
    fake_server.service.uploads._store.claim(record.secret_hash, 0.0)
    answer = httpx.get(f"{fake_server.url}/status/junk")
    assert answer.status_code == 404
    assert "its upload to the one-time URL is arriving now" in answer.json()["error"]["message"]
    unknown = httpx.get(f"{fake_server.url}/status/never-issued")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("No job with id 'never-issued'. Check the id")
