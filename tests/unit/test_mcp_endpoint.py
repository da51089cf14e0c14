"""The /mcp endpoint builds the MCP stack on its first request: a server that
only ever answers REST never loads it; the first MCP requests, however many at
once, wait for one build; one that cannot be built is refused in words, with
the rest of the service up; shutdown stops it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastmcp import Client
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from whisper_mcp.compat.hooks import IncompatibleLibrary
from whisper_mcp.server.mcp_endpoint import LazyMCP

from helpers import InProcessServer


def mcp_endpoint(server: InProcessServer) -> LazyMCP:
    app = server._server.config.app
    endpoint = next(route.app for route in app.routes if getattr(route, "path", None) == "/mcp")
    assert isinstance(endpoint, LazyMCP)
    return endpoint


@pytest.mark.anyio
async def test_the_mcp_stack_is_built_on_the_first_mcp_request(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage") as server:
        endpoint = mcp_endpoint(server)
        with server.client() as http:
            assert http.get("/health").json()["model_loaded"]
        assert not endpoint.loaded  # REST alone: never built
        async with Client(f"{server.url}/mcp") as client:
            assert "transcribe_wav" in {tool.name for tool in await client.list_tools()}
        assert endpoint.loaded


class Lifespan:
    """A one-route app whose lifespan counts its starts and stops."""

    def __init__(self) -> None:
        self.started = self.stopped = self.builds = 0
        self.build_started = threading.Event()
        self.release = threading.Event()

    def build(self) -> Starlette:
        self.builds += 1
        self.build_started.set()
        assert self.release.wait(10)

        async def answer(request: object) -> PlainTextResponse:
            return PlainTextResponse("mcp")

        outer = self

        class Counting:
            async def __aenter__(self) -> None:
                outer.started += 1

            async def __aexit__(self, *exc: object) -> None:
                outer.stopped += 1

        return Starlette(routes=[Route("/mcp", answer, methods=["POST"])], lifespan=lambda app: Counting())


@contextlib.contextmanager
def served(endpoint: LazyMCP) -> Iterator[TestClient]:
    """``endpoint`` at /mcp of an app whose lifespan holds it running (as create_app's does)."""
    app = Starlette(
        routes=[Route("/mcp", endpoint=endpoint, methods=["POST"])], lifespan=lambda app: endpoint.running()
    )
    with TestClient(app) as client:
        yield client


def test_concurrent_first_requests_share_one_build_and_shutdown_stops_it() -> None:
    fake = Lifespan()
    endpoint = LazyMCP(fake.build)
    with served(endpoint) as client:
        answers: list[str] = []
        first = [threading.Thread(target=lambda: answers.append(client.post("/mcp").text)) for _ in range(3)]
        for thread in first:
            thread.start()
        assert fake.build_started.wait(10)
        fake.release.set()
        for thread in first:
            thread.join(10)
        assert answers == ["mcp"] * 3 and fake.builds == 1 and fake.started == 1
        assert client.post("/mcp").text == "mcp" and fake.builds == 1
    assert fake.stopped == 1 and not endpoint.loaded


def test_an_mcp_stack_that_cannot_be_built_is_refused_in_words() -> None:
    def incompatible() -> Starlette:
        raise IncompatibleLibrary("fastmcp 5.0.0 is installed, but whisper-mcp's hook `_on_list_resources` ...")

    with served(LazyMCP(incompatible)) as client:
        for _ in range(2):  # refused the same way each time, without building again
            answer = client.post("/mcp")
            assert answer.status_code == 503
            message = answer.json()["error"]["message"]
            assert message.startswith("MCP is unavailable on this server: fastmcp 5.0.0 is installed"), message
            assert message.endswith("The REST API still works.")


def test_a_server_stopped_before_any_mcp_request_builds_nothing() -> None:
    fake = Lifespan()
    with served(LazyMCP(fake.build)):
        pass
    assert fake.builds == 0
