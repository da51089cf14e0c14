"""Server-sent events: a response that streams events as a job runs, and
notices at once when the client hangs up (not only at the next write, which
may be minutes away while a window decodes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

# A comment line: keeps proxies from closing a quiet stream.
KEEPALIVE = b": keep-alive\n\n"


def event(data: Any, name: str | None = None) -> bytes:
    """One event: JSON ``data``, under ``name`` if given (else a plain message)."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStream(Response):
    """``text/event-stream`` from ``events``; ``on_hangup`` runs (shielded) if
    the client leaves before the last event."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        on_hangup: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self._events = events
        self._on_hangup = on_hangup
        # no-transform and X-Accel-Buffering: proxies must pass each event on at once.
        self.init_headers({"cache-control": "no-cache, no-transform", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = finished = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass  # a GET's empty body; the request body was read before
                gone = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for chunk in self._events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                finished = True
            except OSError:  # the connection broke under a write
                gone = True
            finally:
                with anyio.CancelScope(shield=True):
                    await self._events.aclose()  # type: ignore[attr-defined]
            tg.cancel_scope.cancel()
        if gone and not finished and self._on_hangup is not None:
            with anyio.CancelScope(shield=True):
                await self._on_hangup()


__all__ = ["KEEPALIVE", "EventStream", "event"]
