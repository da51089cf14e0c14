"""Who may call the service: bearer-token authentication and Origin checks.

One ASGI middleware in front of the whole app, because FastMCP's own auth
covers /mcp only and our REST routes need the same protection.
"""

from __future__ import annotations

import hmac
import json
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

# Reachable without a token: a bare liveness answer, the dashboard page (it
# holds no data; its requests carry the token), and one-time upload URLs,
# whose secret is the credential.
PUBLIC_PATHS = ("/livez", "/")
PUBLIC_PREFIXES = ("/upload/",)
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# Where OAuth clients look for metadata (RFC 9728 protected resource, RFC 8414
# authorization server, OpenID discovery), with or without the resource's path
# (/.well-known/oauth-protected-resource/mcp, /mcp/.well-known/openid-configuration).
# This server takes a static bearer token and has no OAuth: these answer 404,
# without a token, which is how RFC 9728 and RFC 8414 say "no such metadata".
# A 401 here made clients (MCP Inspector) take the server for an OAuth resource
# whose metadata needs authorising, and start OAuth instead of sending the token.
OAUTH_DISCOVERY = re.compile(
    r"^(/[^?#]*)?/\.well-known/(oauth-protected-resource|oauth-authorization-server|openid-configuration)(/.*)?$"
)
NO_OAUTH_MESSAGE = (
    "This server does not use OAuth: it takes a static bearer token. Send "
    "'Authorization: Bearer <token>' (the server's WHISPER_MCP_TOKEN) with every request."
)


def local_origins(port: int) -> set[str]:
    hosts = ("127.0.0.1", "localhost", "[::1]")
    return {f"{scheme}://{host}:{port}" for scheme in ("http", "https") for host in hosts}


class AccessGuard:
    def __init__(self, app: ASGIApp, *, token: str | None, allowed_origins: set[str]) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if OAUTH_DISCOVERY.match(path):
            await _error(send, 404, "http_404", NO_OAUTH_MESSAGE)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        # Browsers send Origin; a page on another site must not drive /mcp (DNS
        # rebinding, as the MCP spec warns) or change anything elsewhere.
        guarded = path == "/mcp" or (scope["method"] not in _SAFE_METHODS and not path.startswith(PUBLIC_PREFIXES))
        if origin is not None and guarded and not self._origin_allowed(origin, headers):
            await _error(send, 403, "forbidden", f"Origin {origin!r} is not allowed. Add it with --allowed-origins.")
            return
        if self._token is not None and not _public(path) and not self._authorized(headers):
            await _error(
                send,
                401,
                "unauthorized",
                "Missing or wrong bearer token: send 'Authorization: Bearer <token>' (the server's WHISPER_MCP_TOKEN).",
                {"www-authenticate": 'Bearer realm="whisper-mcp"'},
            )
            return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, headers: Headers) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self._origins:
            return True
        # Our own page served under another name (a LAN address): same origin.
        # Only with a token, since DNS rebinding makes a hostile page look
        # same-origin too, and then the token is what stops it.
        host = headers.get("host", "").lower()
        return self._token is not None and origin.split("://", 1)[-1] == host

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        assert self._token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self._token)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _error(send: Send, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
