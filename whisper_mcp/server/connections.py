"""Connections that cannot pin the server: a deadline for a request's head,
an inactivity timeout for its body, and a cap on open connections that
closes idle ones before it refuses anyone.

Uvicorn times out only a keep-alive connection after a response: a socket
that connects and sends nothing, or sends half its headers, or a body
shorter than its Content-Length, was held forever, and enough of them ran
the process out of file descriptors (then /health timed out for everyone).
The protocol that sets these limits subclasses uvicorn's own
(``compat.uvicorn``); this module fits them to the process and hands them to
uvicorn.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from whisper_mcp.compat.uvicorn import guarded_protocol
from whisper_mcp.config import Settings

log = logging.getLogger("whisper_mcp.server.connections")

# Descriptors kept free for the database, audio files and the model.
_FD_RESERVE = 128


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
        # A live transcription append carries up to 15 MiB of audio, as base64 in JSON.
        "ws_max_size": 21 * 1024 * 1024,
    }
