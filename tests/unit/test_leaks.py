"""No server internals in answers, in process over fake engines: exception
text stays in the log (jobs and MCP tools answer in words), and weights the
operator named by path show by their file name. Client model paths and the
unknown-model message of the real registry:
tests/unit/test_uploads_security.py::test_client_model_names_come_from_the_registry.
Callback URL credentials: tests/unit/test_callback_safety.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from whisper_mcp.engines.base import BatchItem
from whisper_mcp.errors import INTERNAL_ERROR, UnknownModel
from whisper_mcp.models.registry import ModelInfo

from fakes import FakeEngine, FakeRegistry
from helpers import FIXTURES, InProcessServer, submit, wait_done

SECRET_PATH = "/srv/private/models/weights.pt"


class BrokenEngine(FakeEngine):
    def transcribe_batch(self, items: Sequence[BatchItem], model: Any, options: Any) -> list:
        return [OSError(f"[Errno 5] Input/output error: '{SECRET_PATH}'") for _ in items]


def test_a_job_that_raises_fails_in_words_without_the_exception(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", BrokenEngine()) as srv, srv.client() as client:
        job = submit(client, FIXTURES / "short.wav")
        record = wait_done(client, job["job_id"])
        assert record["status"] == "failed" and record["error"] == INTERNAL_ERROR
        assert SECRET_PATH not in client.get("/jobs").text

        async def over_mcp() -> None:
            async with Client(f"{srv.url}/mcp") as mcp:
                answer = await mcp.call_tool("check_transcription_status", {"job_id": job["job_id"]})
                assert answer.structured_content["error"] == INTERNAL_ERROR

        anyio.run(over_mcp)


def test_an_unexpected_error_in_a_tool_is_not_shown(fake_server: InProcessServer) -> None:
    async def broken() -> dict:
        raise RuntimeError(f"cannot open {SECRET_PATH}")

    fake_server.service.models = broken  # type: ignore[method-assign]

    async def over_mcp() -> None:
        async with Client(f"{fake_server.url}/mcp") as mcp:
            with pytest.raises(ToolError) as refused:
                await mcp.call_tool("list_models", {})
            assert str(refused.value) == INTERNAL_ERROR

    anyio.run(over_mcp)


class PathRegistry(FakeRegistry):
    """Resolves the operator's path (trusted) as the real registry does; a client's never."""

    def resolve(self, name: str, *, trusted: bool = False) -> ModelInfo:
        if trusted and name == SECRET_PATH:
            return ModelInfo(name, "file", local=True)
        if name.startswith("/"):
            raise UnknownModel(f"Unknown model {name!r}.")
        return super().resolve(name, trusted=trusted)


def test_weights_named_by_path_show_by_their_file_name(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.registry = PathRegistry()
    with InProcessServer.start(tmp_path / "storage", engine, model=SECRET_PATH) as srv, srv.client() as client:
        health = client.get("/health").json()
        assert health["model"] == "weights.pt" and health["loaded_models"] == ["weights.pt"]
        assert client.get("/models").json()["default"] == "weights.pt"
        default = wait_done(client, submit(client, FIXTURES / "short.wav")["job_id"])
        by_label = wait_done(client, submit(client, FIXTURES / "short.wav", model="weights.pt")["job_id"])
        assert default["status"] == by_label["status"] == "completed"
        assert default["model"] == by_label["model"] == "weights.pt"
        assert engine.calls[-1][0] == SECRET_PATH  # the operator's weights ran
        other = httpx.post(
            f"{srv.url}/transcribe",
            files={"file": ("s.wav", (FIXTURES / "short.wav").read_bytes())},
            data={"model": "/srv/private/models/other.pt"},
        )
        assert other.status_code == 400 and other.json()["error"]["code"] == "unknown_model"
        assert SECRET_PATH not in client.get("/jobs").text + client.get("/health").text
