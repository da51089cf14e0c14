"""What the MCP tools declare about themselves: annotations (which decide
whether Codex runs a tool unasked), output schemas that every answer
validates against, the wait cap in the input schema, and descriptions that
name the accepted formats and one base64 rule. In process, over a fake
engine, through the real fastmcp client."""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastmcp import Client

from whisper_mcp.engines.base import BatchItem

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer

pytestmark = pytest.mark.anyio

# Codex (codex-rs, requires_mcp_tool_approval) runs a tool without asking when
# readOnlyHint is true, or when destructiveHint and openWorldHint are both
# false; a missing hint counts as true.
EXPECTED_ANNOTATIONS = {
    "transcribe_wav": dict(read_only=False, destructive=False, idempotent=False, open_world=False),
    "create_upload_url": dict(read_only=False, destructive=False, idempotent=False, open_world=False),
    "begin_upload": dict(read_only=False, destructive=False, idempotent=False, open_world=False),
    "upload_chunk": dict(read_only=False, destructive=False, idempotent=True, open_world=False),
    "cancel_transcription": dict(read_only=False, destructive=True, idempotent=True, open_world=False),
    "check_transcription_status": dict(read_only=True, open_world=False),
    "list_transcription_jobs": dict(read_only=True, open_world=False),
    "list_models": dict(read_only=True, open_world=False),
    "health": dict(read_only=True, open_world=False),
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def codex_asks_first(annotations: Any) -> bool:
    """Codex's rule for MCP tools in its default approval mode."""
    if annotations is None:
        return True
    if annotations.destructive_hint is True:
        return True
    if annotations.read_only_hint is True:
        return False
    return annotations.destructive_hint is not False or annotations.open_world_hint is not False


def closed(schema: Any) -> Any:
    """``schema`` with every object that lists properties closed to others: an
    answer passes only if the schema declares each key it holds."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


class FailingEngine(FakeEngine):
    def transcribe_batch(self, items: Sequence[BatchItem], model: Any, options: Any) -> list:
        return [RuntimeError("the fake decoder broke") for _ in items]


async def test_annotations_let_codex_run_the_tools_that_only_add_work(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        tools = {t.name: t for t in await client.list_tools()}
    assert set(tools) == set(EXPECTED_ANNOTATIONS)
    for name, expected in EXPECTED_ANNOTATIONS.items():
        hints = tools[name].annotations
        assert hints is not None, name
        for field, value in expected.items():
            assert getattr(hints, f"{field}_hint") is value, (name, field)
    unasked = {name for name, tool in tools.items() if not codex_asks_first(tool.annotations)}
    assert unasked == set(EXPECTED_ANNOTATIONS) - {"cancel_transcription"}


async def test_descriptions_name_the_formats_and_one_base64_rule(fake_server: InProcessServer) -> None:
    async with Client(f"{fake_server.url}/mcp") as client:
        tools = {t.name: t for t in await client.list_tools()}
        instructions = client.instructions or ""
    audio = tools["transcribe_wav"].input_schema["properties"]["audio_base64"]["description"]
    for text in (audio, instructions):
        for name in ("WAV", "MP3", "FLAC", "Ogg/Opus", "M4A", "WebM"):
            assert name in text, (name, text)
    assert "10 KB" in audio and "4 MiB" in audio
    assert "10 KB" in instructions
    assert "a few KB" not in audio and "hundred KB" not in audio


async def test_wait_seconds_carries_the_configured_cap(tmp_path: Path) -> None:
    for cap in (50, 30):
        with InProcessServer.start(tmp_path / f"s{cap}", max_wait_seconds=cap) as srv:
            async with Client(f"{srv.url}/mcp") as client:
                tools = {t.name: t for t in await client.list_tools()}
        wait = tools["check_transcription_status"].input_schema["properties"]["wait_seconds"]
        assert wait["maximum"] == cap and wait["minimum"] == 0
        assert f"at most {cap}" in wait["description"]


async def test_every_answer_validates_against_its_output_schema(tmp_path: Path) -> None:
    """Each tool on each of its paths: queued, processing, completed (in every
    format, with word timings), cached, re-sent under its id, with a callback,
    failed, cancelled, waiting for its one-time upload; uploads chunked with
    and without a size; listings and health. Errors carry no structured
    content."""
    answers: list[tuple[str, dict[str, Any]]] = []
    errors: list[Any] = []
    short = (FIXTURES / "short.wav").read_bytes()
    speech = (FIXTURES / "speech.mp3").read_bytes()
    engine = FakeEngine()

    async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await client.call_tool(tool, args, raise_on_error=False)
        if result.is_error:
            errors.append(result)
            return {}
        assert result.structured_content is not None, tool
        answers.append((tool, result.structured_content))
        return result.structured_content

    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        async with Client(f"{srv.url}/mcp") as client:
            schemas = {t.name: t.output_schema for t in await client.list_tools()}
            await call(client, "health", {})
            engine.gate.clear()  # the first job holds the worker
            held = await call(client, "transcribe_wav", {"audio_base64": b64(short), "job_id": "held"})
            waiting = await call(
                client,
                "transcribe_wav",
                {"audio_base64": b64(speech), "job_id": "waiting", "callback_url": "http://127.0.0.1:9/hook"},
            )
            assert waiting["status"] == "queued" and "queue_position" in waiting
            assert engine.started.wait(10)
            running = await call(client, "check_transcription_status", {"job_id": "held"})
            assert running["status"] == "processing" and "eta_seconds" in running
            await call(client, "health", {})  # a job in progress
            await call(client, "list_transcription_jobs", {})
            cancelled = await call(client, "cancel_transcription", {"job_id": "waiting"})
            assert cancelled["status"] == "cancelled"
            engine.gate.set()
            for fmt in ("txt", "srt", "vtt", "json", "tsv"):
                done = await call(
                    client, "check_transcription_status", {"job_id": held["job_id"], "wait_seconds": 10, "format": fmt}
                )
                assert done["status"] == "completed"
            cached = await call(client, "transcribe_wav", {"audio_base64": b64(short)})
            assert cached.get("cached") is True
            again = await call(client, "transcribe_wav", {"audio_base64": b64(short), "job_id": "held"})
            assert again["job_id"] == "held"
            words = await call(
                client, "transcribe_wav", {"audio_base64": b64(speech), "word_timestamps": True, "language": "en"}
            )
            await call(client, "check_transcription_status", {"job_id": words["job_id"], "wait_seconds": 10})

            begun = await call(client, "begin_upload", {"filename": "s.wav", "size": len(short)})
            half = len(short) // 2
            part = await call(
                client, "upload_chunk", {"upload_id": begun["upload_id"], "offset": 0, "data_base64": b64(short[:half])}
            )
            assert part["complete"] is False and part["missing"]
            await call(
                client,
                "upload_chunk",
                {"upload_id": begun["upload_id"], "offset": half, "data_base64": b64(short[half:])},
            )
            await call(client, "transcribe_wav", {"upload_id": begun["upload_id"], "cache": False})
            sized = hashlib.sha256(short).hexdigest()
            unsized = await call(client, "begin_upload", {"sha256": sized})
            whole = await call(
                client, "upload_chunk", {"upload_id": unsized["upload_id"], "offset": 0, "data_base64": b64(short)}
            )
            assert "complete" not in whole
            await call(client, "create_upload_url", {"filename": "later.wav", "job_id": "later"})
            waiting = await call(client, "check_transcription_status", {"job_id": "later"})
            assert waiting["status"] == "waiting_for_upload"
            await call(client, "list_transcription_jobs", {"status": "completed", "limit": 2})
            await call(client, "list_models", {})

            # Errors: a tool error, never structured content to validate.
            await call(client, "check_transcription_status", {"job_id": "no-such-job"})
            await call(client, "cancel_transcription", {"job_id": "held"})  # already ended
            await call(client, "transcribe_wav", {"audio_base64": b64(b"not audio at all")})

    with InProcessServer.start(tmp_path / "failing", FailingEngine()) as srv:
        async with Client(f"{srv.url}/mcp") as client:
            queued = await call(client, "transcribe_wav", {"audio_base64": b64(short)})
            failed = await call(client, "check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 10})
            assert failed["status"] == "failed" and failed["error"]

    assert {tool for tool, _ in answers} == set(EXPECTED_ANNOTATIONS)
    for tool, answer in answers:
        schema = schemas[tool]
        assert schema and schema.get("type") == "object" and schema.get("properties"), tool
        jsonschema.validate(answer, schema)
        jsonschema.validate(answer, closed(schema))  # and the schema names every key
    assert len(errors) == 3
    assert all(error.structured_content is None for error in errors)
