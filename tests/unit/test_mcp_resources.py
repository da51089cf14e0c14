"""Finished transcripts as MCP resources: resources/list shows them newest
first, a page of jobs at a time behind an opaque cursor, each format with its
own MIME type; the templates and what a read returns carry the same types.
In process, over a fake engine, through the real fastmcp client."""

from __future__ import annotations

import base64
import json

import pytest
from fastmcp import Client
from mcp.shared.exceptions import MCPError

from whisper_mcp.server import mcp as mcp_module

from helpers import FIXTURES, InProcessServer

pytestmark = pytest.mark.anyio

MIME_TYPES = {
    "txt": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "json": "application/json",
    "tsv": "text/tab-separated-values",
}


async def finish(client: Client, job_id: str, audio: str = "short.wav") -> None:
    data = base64.b64encode((FIXTURES / audio).read_bytes()).decode()
    await client.call_tool(
        "transcribe_wav", {"audio_base64": data, "job_id": job_id, "filename": f"{job_id}.wav", "cache": False}
    )
    done = await client.call_tool("check_transcription_status", {"job_id": job_id, "wait_seconds": 10})
    assert done.structured_content["status"] == "completed"


async def test_finished_transcripts_are_listed_newest_first_with_their_types(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        assert await client.list_resources() == []
        for job_id in ("first", "second", "third"):
            await finish(client, job_id)
        fake_server.engine.gate.clear()  # a job still running is not a finished transcript
        await client.call_tool(
            "transcribe_wav",
            {"audio_base64": base64.b64encode((FIXTURES / "speech.mp3").read_bytes()).decode(), "job_id": "running"},
        )
        listed = await client.list_resources()
        fake_server.engine.gate.set()

        uris = [str(r.uri) for r in listed]
        assert uris == [f"transcript://{job}/{fmt}" for job in ("third", "second", "first") for fmt in MIME_TYPES]
        for resource in listed:
            job_id, fmt = str(resource.uri).removeprefix("transcript://").split("/")
            assert resource.mime_type == MIME_TYPES[fmt]
            assert resource.title == f"{job_id}.wav ({fmt})"
            assert resource.annotations is not None and resource.annotations.last_modified

        for fmt, mime in MIME_TYPES.items():
            contents = await client.read_resource(f"transcript://second/{fmt}")
            assert len(contents) == 1 and contents[0].mime_type == mime, fmt
            assert contents[0].text.strip(), fmt
        assert json.loads((await client.read_resource("transcript://second/json"))[0].text)["text"]
        plain = await client.read_resource("transcript://second")
        assert plain[0].mime_type == "text/plain" and plain[0].text.startswith("fake transcript")

        templates = {t.uri_template: t.mime_type for t in await client.list_resource_templates()}
    assert templates["transcript://{job_id}/json"] == "application/json"
    assert templates == {"transcript://{job_id}": "text/plain"} | {
        f"transcript://{{job_id}}/{fmt}": mime for fmt, mime in MIME_TYPES.items()
    }


async def test_pages_follow_the_cursor_to_the_end(
    fake_server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp_module, "RESOURCE_PAGE_JOBS", 2)
    names = [f"job{i}" for i in range(5)]
    async with Client(f"{fake_server.url}/mcp") as client:
        for name in names:
            await finish(client, name)
        pages: list[list[str]] = []
        cursor = None
        while True:
            page = await client.list_resources_mcp(cursor=cursor)
            pages.append([str(r.uri) for r in page.resources])
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(pages) < 10, "the cursor never ended"
        with pytest.raises(MCPError) as info:
            await client.list_resources_mcp(cursor="not-a-cursor")
        assert info.value.error.code == -32602
    assert [len(p) for p in pages] == [10, 10, 5]
    jobs = [uri.split("/")[2] for page in pages for uri in page[:: len(MIME_TYPES)]]
    assert jobs == list(reversed(names))


async def test_reading_an_unfinished_or_unknown_job_says_why(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("transcript://nope/json")
    assert "no job with id" in str(info.value).lower()


def test_a_job_lists_one_resource_per_format() -> None:
    """A resource per format of each job, built from its status record alone."""
    resources = mcp_module.transcript_resources(
        {"job_id": "abc", "filename": None, "finished_at": 0.0, "status": "completed"}
    )
    assert [(str(r.uri), r.mime_type) for r in resources] == [
        (f"transcript://abc/{fmt}", mime) for fmt, mime in MIME_TYPES.items()
    ]
    assert resources[0].annotations.last_modified == "1970-01-01T00:00:00+00:00"
