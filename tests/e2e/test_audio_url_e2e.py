"""Jobs sent as a URL, on a real server process with the real model, fetching
from a real local HTTP server (loopback: allowed while the server listens
there): docs/api.md's curl commands as written, where the model hears the
recording; a 404 and a recording over --max-upload-mb that fail the job
naming the host; and the MCP tool's audio_url. One server for the module.
Refusals and the policy: tests/unit/test_audio_urls.py and
tests/unit/test_audio_url_refusals.py (in process, over a fake engine)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from helpers import FIXTURES, ROOT, AudioServer, ServerProcess, wait_done, wait_over_mcp, words

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("audio-url")
    srv = ServerProcess(root / "storage", root / "server.log", "--max-upload-mb", "1").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def files() -> Iterator[AudioServer]:
    audio = AudioServer()
    audio.serve("/speech.wav", FIXTURES / "speech.wav")
    audio.serve("/short.wav", FIXTURES / "short.wav")
    audio.serve("/big.wav", FIXTURES / "speech_stereo_44k.wav")  # 1.3 MB
    yield audio
    audio.close()


def test_the_docs_curl_commands(server: ServerProcess, files: AudioServer, tmp_path: Path) -> None:
    """docs/api.md's Audio from a URL commands, run as written with the real
    curl, pointed at this server and at the local file server."""
    section = (ROOT / "docs" / "api.md").read_text().split("## Audio from a URL", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under docs/api.md's Audio from a URL"
    commands = [c for c in block.group(1).replace("\\\n", " ").splitlines() if c.startswith("curl ")]
    assert len(commands) == 2, commands
    job_id = f"url-demo-{tmp_path.name[-12:]}"  # the same id as written, made unique per run
    url = f"{files.url}/speech.wav?X-Amz-Signature=s3cr3t-signature"
    outputs = []
    for command in commands:
        command = re.sub(r"audio_url='[^']*'", f"audio_url='{url}'", command)
        command = command.replace("http://127.0.0.1:8765", server.url).replace("url-demo", job_id)
        done = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(json.loads(done.stdout))
    submitted, status = outputs
    assert submitted["job_id"] == job_id and submitted["status"] in ("queued", "processing")
    assert status["status"] == "completed", status
    assert {"transcription", "model", "loaded", "friday"} <= words(status["transcript"])
    assert status["audio_url"] == f"{files.url}/speech.wav?X-Amz-Signature=***"
    assert "s3cr3t-signature" not in server.log_path.read_text()


def test_a_missing_or_too_large_recording_fails_the_job(server: ServerProcess, files: AudioServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, error in [
            ("/gone.wav", "could not fetch audio from 127.0.0.1: HTTP 404"),
            (
                "/big.wav",
                "could not fetch audio from 127.0.0.1: it is larger than the server's limit of 1 MiB (--max-upload-mb).",
            ),
        ]:
            response = client.post("/transcribe", files={"audio_url": (None, files.url + path)})
            assert response.status_code == 202, response.text
            record = wait_done(client, response.json()["job_id"])
            assert (record["status"], record["error"]) == ("failed", error)


def test_the_mcp_tool_takes_an_audio_url(server: ServerProcess, files: AudioServer) -> None:
    async def over_mcp() -> dict:
        async with Client(StreamableHttpTransport(f"{server.url}/mcp")) as mcp:
            queued = await mcp.call_tool("transcribe_wav", {"audio_url": f"{files.url}/short.wav"})
            assert queued.structured_content["status"] == "queued"  # type: ignore[index]
            return await wait_over_mcp(mcp, queued.structured_content["job_id"])  # type: ignore[index]

    record = anyio.run(over_mcp)
    assert record["status"] == "completed", record
    assert {"hello", "world"} <= words(record["transcript"])
