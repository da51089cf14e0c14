"""The ASGI application: MCP at /mcp and the REST routes, in one Starlette app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from whisper_mcp.server.http import dashboard, openai_api, rest
from whisper_mcp.config import Settings
from whisper_mcp.server.http.security import AccessGuard, local_origins
from whisper_mcp.server.service import TranscriptionService
from whisper_mcp.server.mcp import build_mcp


def create_app(settings: Settings) -> Starlette:
    service = TranscriptionService(settings)
    mcp_app = build_mcp(service).http_app(path="/mcp")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            async with mcp_app.lifespan(app):
                yield
        finally:
            await service.stop()

    app = Starlette(
        # The MCP app as the endpoint of /mcp alone, so every other path gets
        # our JSON errors rather than its plain-text 404.
        routes=[
            *rest.routes(service),
            *openai_api.routes(service),
            *dashboard.routes(),
            Route("/mcp", endpoint=mcp_app),
        ],
        exception_handlers=rest.exception_handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
        middleware=[
            Middleware(
                AccessGuard,
                token=settings.resolved_token(),
                allowed_origins=local_origins(settings.port)
                | {o.strip() for o in settings.allowed_origins.split(",") if o.strip()},
            )
        ],
    )
    app.state.service = service
    return app
