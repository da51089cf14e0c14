"""Who may open the realtime transcription WebSocket, and the route that hands
out client secrets for browsers.

A WebSocket handshake carries its credential one of two ways, as OpenAI's
Realtime API takes it:

* ``Authorization: Bearer <key>``: programs (``whisper-mcp live``, OpenAI's SDKs);
* the subprotocols ``realtime`` and ``openai-insecure-api-key.<key>`` in
  ``Sec-WebSocket-Protocol``: browsers, whose WebSocket cannot set headers.

``<key>`` is the server's token or a client secret (``ek_…``) from
``POST /v1/realtime/client_secrets``; a page should only ever put a client
secret there, since a subprotocol is visible to whatever runs in the page.
A client secret is used up by the handshake that presents it.

The access guard calls ``authenticate_websocket`` for every handshake, after
its Host and Origin checks, and leaves the identity in the scope's state
(``IDENTITY_STATE``) for the socket's route: the subprotocol to accept with,
and the session configuration a client secret carries.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from whisper_mcp.errors import ServiceError
from whisper_mcp.server.http.openai_errors import openai_error
from whisper_mcp.server.realtime.protocol import SessionConfig
from whisper_mcp.server.realtime_secrets import SECRET_PREFIX, ClientSecrets

SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
CLIENT_SECRETS_PATH = "/v1/realtime/client_secrets"
MAX_BODY_BYTES = 64 * 1024
# Where the access guard leaves a handshake's ``RealtimeIdentity`` for the
# socket's route: ``scope["state"][IDENTITY_STATE]``.
IDENTITY_STATE = "realtime_identity"


@dataclass(frozen=True)
class RealtimeIdentity:
    """Who opened a socket, and how to answer its handshake."""

    via: Literal["token", "client_secret", "open"]  # open: the server has no token
    # The session configuration a client secret carries (OpenAI's
    # transcription session shape, as sent to POST /v1/realtime/client_secrets);
    # None for the token or an open server.
    session: dict[str, Any] | None
    # The subprotocol to accept with (``realtime`` when the client offered it,
    # as a browser must be answered with one it offered); never the key's.
    subprotocol: str | None


class RealtimeRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for value in headers.getlist("sec-websocket-protocol") for p in value.split(",") if p.strip()]


def presented_key(headers: Headers) -> str | None:
    """The credential a handshake carries: the bearer header's, else the key subprotocol's."""
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    for protocol in offered_subprotocols(headers):
        if protocol.startswith(KEY_SUBPROTOCOL) and len(protocol) > len(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def authenticate_websocket(scope: Scope, *, token: str | None, secrets: ClientSecrets | None) -> RealtimeIdentity:
    """Check a WebSocket handshake's credential (before accepting it): the
    identity to accept with, or ``RealtimeRefused`` in words. A client secret
    it presents is used up, whatever happens to the socket next."""
    headers = Headers(scope=scope)
    key = presented_key(headers)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(headers) else None
    if key is not None and key.startswith(SECRET_PREFIX):
        session = None if secrets is None else await secrets.redeem(key)
        if session is None:
            raise RealtimeRefused(
                401,
                "invalid_client_secret",
                "This client secret is unknown, expired or already used: each one opens one connection "
                f"within its lifetime. Ask POST {CLIENT_SECRETS_PATH} for a new one.",
            )
        return RealtimeIdentity("client_secret", session, subprotocol)
    if not token:
        return RealtimeIdentity("open", None, subprotocol)
    if key is not None and hmac.compare_digest(key.encode(), token.encode()):
        return RealtimeIdentity("token", None, subprotocol)
    raise RealtimeRefused(
        401,
        "unauthorized",
        "Missing or wrong credential: send the bearer token, 'Authorization: Bearer <token>' (the server's "
        f"WHISPER_MCP_TOKEN) or, from a browser, the subprotocols '{SUBPROTOCOL}' and '{KEY_SUBPROTOCOL}<client secret>' "
        f"with a client secret from POST {CLIENT_SECRETS_PATH}.",
    )


def routes(secrets: ClientSecrets, check: Callable[[SessionConfig], object] | None = None) -> list[Route]:
    """The client secrets route; ``check`` refuses a session the socket would
    (a ``ServiceError`` in words), so a bad model is told at once."""

    async def create(request: Request) -> Response:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return openai_error(f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.", 413, code="too_large")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return openai_error("The body is not valid JSON.", 400, code="invalid_json")
        try:
            return JSONResponse(await secrets.create(body, check))
        except ServiceError as exc:
            return openai_error(exc.message, exc.status_code, code=exc.code)

    return [Route(CLIENT_SECRETS_PATH, create, methods=["POST"])]
