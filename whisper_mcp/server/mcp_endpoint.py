"""The /mcp endpoint, with the MCP stack loaded on its first request.

FastMCP, the MCP SDK and their pydantic models are most of a server's start-up
(about 0.6 s of CPU) and some 38 MiB that a service taking work over REST
alone never uses. The endpoint imports and builds them, off the event loop,
when the first MCP request arrives; that request waits for it, the next ones
do not.

The MCP app's lifespan (its session manager's task group) is entered and left
by one task that the server's lifespan owns, as anyio's cancel scopes require,
not by whichever request came first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from whisper_mcp.compat.hooks import IncompatibleLibrary
from whisper_mcp.errors import Unavailable

log = logging.getLogger("whisper_mcp.server.mcp_endpoint")


class LazyMCP:
    """An ASGI app for /mcp: ``build()`` (the MCP app, run in a worker thread)
    on the first request, while ``running()`` is held."""

    def __init__(self, build: Callable[[], Starlette]) -> None:
        self._build = build
        self._app: Starlette | None = None
        self._refusal: Unavailable | None = None  # why /mcp cannot answer
        self._wanted: anyio.Event | None = None  # set by the first request, or by shutdown
        self._ready: anyio.Event | None = None  # built (or refused)
        self._stop: anyio.Event | None = None

    @property
    def loaded(self) -> bool:
        return self._app is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Held for the server's life: the MCP app, once built, runs its
        lifespan inside; leaving stops it."""
        self._wanted, self._ready, self._stop = anyio.Event(), anyio.Event(), anyio.Event()
        self._refusal = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._serve, self._wanted, self._ready, self._stop)
            try:
                yield
            finally:
                self._refusal = _shutting_down()
                self._stop.set()
                self._wanted.set()

    async def _serve(self, wanted: anyio.Event, ready: anyio.Event, stop: anyio.Event) -> None:
        try:
            await wanted.wait()
            if stop.is_set():
                return
            try:
                app = await anyio.to_thread.run_sync(self._build)
            except IncompatibleLibrary as exc:
                log.error("MCP is unavailable: %s", exc)
                self._refusal = Unavailable(f"MCP is unavailable on this server: {exc}. The REST API still works.")
                return
            except Exception:
                log.exception("building the MCP app failed")
                self._refusal = Unavailable("MCP could not be started on this server; its log says why.")
                return
            async with app.router.lifespan_context(app):
                self._app = app
                ready.set()
                await stop.wait()
                self._app = None
        finally:
            ready.set()  # no request waits for a build that will not come

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None and self._refusal is None and self._wanted is not None and self._ready is not None:
            self._wanted.set()
            await self._ready.wait()
            app = self._app
        if app is None:
            refusal = self._refusal or _shutting_down()
            await JSONResponse(refusal.to_dict(), refusal.status_code)(scope, receive, send)
            return
        await app(scope, receive, send)


def _shutting_down() -> Unavailable:
    return Unavailable("The server is shutting down; try again when it is back.")
