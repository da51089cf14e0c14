"""The /mcp endpoint: FastMCP's app, imported and started on the first MCP
request rather than at start-up.

The MCP stack (fastmcp, mcp and its protocol versions' pydantic models) is
about 0.6 s of CPU to import and 40 MiB held, which a server that only ever
answers REST, the OpenAI API or the dashboard never needs: start-up is that
much quicker and leaner, and the first MCP request pays it once. The import
runs on a worker thread, so the event loop keeps answering meanwhile.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("whisper_mcp.server.mcp")

# What the first request imports, off the event loop: the tools' module, and with it fastmcp and mcp.
MCP_MODULE = "whisper_mcp.server.mcp"


class LazyMCP:
    """An ASGI endpoint that builds the MCP app (``build``, on the event loop,
    once its module is imported) on the first request, and runs the MCP app's
    lifespan from then until ``running`` ends."""

    def __init__(self, build: Callable[[], Starlette]) -> None:
        self._build = build
        self._app: Starlette | None = None
        self._lock = anyio.Lock()
        self._tasks: TaskGroup | None = None
        self._stopping = anyio.Event()

    @property
    def loaded(self) -> bool:
        return self._app is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The server's lifespan: the MCP app's lifespan, once started, ends with it."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._stopping.set()
                self._tasks = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app if self._app is not None else await self._start()
        await app(scope, receive, send)

    async def _start(self) -> ASGIApp:
        async with self._lock:
            if self._app is not None:
                return self._app
            if self._tasks is None:
                raise RuntimeError("the MCP endpoint is used outside the server's lifespan")
            began = time.perf_counter()
            await anyio.to_thread.run_sync(importlib.import_module, MCP_MODULE)
            app = self._build()
            await self._tasks.start(self._serve, app)
            self._app = app
            log.info("MCP stack loaded on the first MCP request in %.2f s", time.perf_counter() - began)
            return app

    async def _serve(self, app: Starlette, *, task_status: TaskStatus[None]) -> None:
        async with app.router.lifespan_context(app):
            task_status.started()
            await self._stopping.wait()


__all__ = ["MCP_MODULE", "LazyMCP"]
