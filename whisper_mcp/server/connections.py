"""Connections that cannot pin the server: a deadline for a request's head,
an inactivity timeout for its body, and a cap on open connections that
closes idle ones before it refuses anyone.

Uvicorn times out only a keep-alive connection after a response: a socket
that connects and sends nothing, or sends half its headers, or a body
shorter than its Content-Length, was held forever, and enough of them ran
the process out of file descriptors (then /health timed out for everyone).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from whisper_mcp.config import Settings

log = logging.getLogger("whisper_mcp.server.connections")

# Descriptors kept free for the database, audio files and the model.
_FD_RESERVE = 128
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
)
_BUSY_TEXT = b"The server has too many connections in use; try again in a moment.\n"


class GuardedH11Protocol(H11Protocol):
    """Uvicorn's h11 protocol with the limits above (set on a subclass by
    ``guarded_protocol``)."""

    max_connections = 1000
    header_timeout = 10.0
    body_timeout = 60.0

    _timer: asyncio.TimerHandle | None = None
    _idle_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._evict_idle():
            self.transport = transport  # connection_lost, called still, closes it
            transport.write(_BUSY % len(_BUSY_TEXT) + _BUSY_TEXT)
            transport.close()
            return
        super().connection_made(transport)
        self._idle_since = time.monotonic()
        self._arm(self.header_timeout)  # its request line and headers must come within this

    def _evict_idle(self) -> bool:
        """Close the connection idle longest (no request in progress), to make
        room; False when every connection is busy."""
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c._idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._idle_since)
        oldest.transport.close()
        self.connections.discard(oldest)
        return True

    def _idle(self) -> bool:
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout)  # inactivity: each piece of the body restarts it
        elif state is h11.IDLE:
            if self._timer is None:  # the next request's head has begun
                self._arm(self.header_timeout)
        else:
            self._disarm()  # the request is in; the app answers in its own time

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # uvicorn's keep-alive timeout closes it if it stays idle
        self._idle_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY and self.flow.read_paused:
            # We stopped reading (the app is busy with the body so far): not the client's delay.
            self._arm(self.body_timeout)
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.transport.close()


def guarded_protocol(max_connections: int, header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout": header_timeout, "body_timeout": body_timeout},
    )


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered to fit under the process's open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted + _FD_RESERVE <= soft:
        return wanted
    fitted = max(16, soft - _FD_RESERVE)
    log.warning("--max-connections %d lowered to %d to fit the open-files limit (ulimit -n %d)", wanted, fitted, soft)
    return fitted


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The connection limits as ``uvicorn.Config`` arguments."""
    return {
        "http": guarded_protocol(
            connection_limit(settings.max_connections),
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
        ),
        "timeout_keep_alive": settings.keep_alive_seconds,
        # Bounded headers: h11 refuses a request head larger than this (uvicorn's default).
        "h11_max_incomplete_event_size": 16 * 1024,
    }
