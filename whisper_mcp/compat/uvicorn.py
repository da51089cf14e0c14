"""Every use of uvicorn's private code, written for uvicorn 0.54.0.

``GuardedH11Protocol`` subclasses uvicorn's ``H11Protocol`` (its connection
set, transport, h11 connection, request cycle, loop and flow control) to give
each connection a deadline for its request's head, an inactivity timeout for
its body, and a cap on open connections that closes idle ones before it
refuses anyone (``server.connections`` says why). These guard the server
against clients that would pin it, so the hook is fatal: without its names
the service does not start, rather than run unguarded.
"""

from __future__ import annotations

import asyncio
import functools
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from whisper_mcp.compat.hooks import Check, Hook, Library

_H11 = "uvicorn.protocols.http.h11_impl:"

LIBRARY = Library(
    "uvicorn",
    "0.54.0",
    (
        Hook(
            "H11Protocol",
            "the request-head deadline, body timeout and connection cap",
            (
                _H11 + "H11Protocol.connection_made(self, transport)",
                _H11 + "H11Protocol.data_received(self, data)",
                _H11 + "H11Protocol.on_response_complete(self)",
                _H11 + "H11Protocol.connection_lost(self, exc)",
                *(
                    _H11 + f"H11Protocol[{name}]"
                    for name in ("connections", "transport", "conn", "cycle", "loop", "flow")
                ),
                _H11 + "RequestResponseCycle[response_complete]",
                "uvicorn.protocols.http.flow_control:FlowControl[read_paused]",
            ),
        ),
    ),
)


@functools.cache
def check() -> Check:
    """The hooks against the installed uvicorn; once per process."""
    return LIBRARY.examine()


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
)
_BUSY_TEXT = b"The server has too many connections in use; try again in a moment.\n"


class GuardedH11Protocol(H11Protocol):
    """Uvicorn's h11 protocol with the limits the module's docstring names
    (set on a subclass by ``guarded_protocol``)."""

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
        if self.transport.get_protocol() is not self:
            # Upgraded to a WebSocket (its request's body never comes): the
            # connection is the WebSocket protocol's now, with its own pings.
            self._disarm()
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
    """``GuardedH11Protocol`` with these limits, for ``uvicorn.Config(http=...)``."""
    check().raise_if_fatal()
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout": header_timeout, "body_timeout": body_timeout},
    )


__all__ = ["LIBRARY", "GuardedH11Protocol", "check", "guarded_protocol"]
