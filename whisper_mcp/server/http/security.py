"""Who may call the service: Host checks, bearer-token authentication and Origin checks.

One ASGI middleware in front of the whole app, because FastMCP's own auth
covers /mcp only and our REST routes need the same protection. WebSocket
handshakes (live transcription) pass the same Host and Origin checks, and
their credential is the token or a client secret, in a header or a
subprotocol (``realtime_auth``); they are refused before they are accepted,
with the same status and JSON body where the server can send one
(``websocket.http.response``), else with a close.
"""

from __future__ import annotations

import hmac
import json
import re
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whisper_mcp.server.http.openai_errors import V1_PREFIX, error_body
from whisper_mcp.server.http.realtime_auth import IDENTITY_STATE, RealtimeRefused, authenticate_websocket
from whisper_mcp.server.realtime_secrets import ClientSecrets

# Reachable without a token: a bare liveness answer, the dashboard page and
# its audio worklet (they hold no data; the page's requests carry the token),
# and one-time upload URLs, whose secret is the credential.
PUBLIC_PATHS = ("/livez", "/", "/live-worklet.js")
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


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Allowed without --allowed-hosts: loopback, and the name Docker gives the host
# inside containers (how agents in containers reach a service on their host,
# as MONITOR.md says). Neither is a name a rebinding attacker's page can own.
DEFAULT_HOSTS = LOOPBACK_HOSTS | {"host.docker.internal"}
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def allowed_hosts(bind_host: str, public_url: str, extra: tuple[str, ...]) -> frozenset[str] | None:
    """Host names requests may be addressed to (any port): loopback names, the
    bind address unless it is a wildcard, the --public-url's host and
    --allowed-hosts. None when ``*`` allows every name."""
    if "*" in extra:
        return None
    hosts = set(DEFAULT_HOSTS) | {_host_name(h) for h in extra if h.strip()}
    if bind_host.strip().lower() not in _WILDCARD_BINDS:
        hosts.add(_host_name(bind_host))
    public = urlsplit(public_url.strip()).hostname if public_url.strip() else None
    if public:
        hosts.add(_host_name(public))
    return frozenset(hosts)


def host_of(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8765`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        return _host_name(value[1 : value.find("]")] if "]" in value else value[1:])
    return _host_name(value.rsplit(":", 1)[0] if value.count(":") == 1 else value)


def _host_name(name: str) -> str:
    name = name.strip().lower().strip("[]")
    return name[:-1] if name.endswith(".") else name  # "localhost." is "localhost"


def local_origins(port: int) -> set[str]:
    hosts = ("127.0.0.1", "localhost", "[::1]")
    return {f"{scheme}://{host}:{port}" for scheme in ("http", "https") for host in hosts}


class AccessGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_origins: set[str],
        allowed_hosts: frozenset[str] | None = None,
        client_secrets: ClientSecrets | None = None,
    ) -> None:
        self.app = app
        self._token_text = token or None
        self._token = token.encode() if token else None
        self._secrets = client_secrets
        self._origins = {o.rstrip("/").lower() for o in allowed_origins}
        self._hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        websocket = scope["type"] == "websocket"
        deny = _denying_websocket(scope, receive, send) if websocket else send
        headers = Headers(scope=scope)
        # DNS rebinding: a hostile page whose name now resolves to us sends its
        # own name as Host. Browsers always send Host; a request without one
        # comes from no browser.
        host = headers.get("host")
        if self._hosts is not None and host is not None and host_of(host) not in self._hosts:
            await _error(
                deny,
                path,
                421,
                "misdirected_request",
                f"This server does not answer to the host name {host_of(host)!r}. If that is its "
                "address, the operator can add it with --allowed-hosts (WHISPER_MCP_ALLOWED_HOSTS).",
            )
            return
        if OAUTH_DISCOVERY.match(path):
            await _error(deny, path, 404, "http_404", NO_OAUTH_MESSAGE)
            return
        origin = headers.get("origin")
        # Browsers send Origin; a page on another site must not drive /mcp (DNS
        # rebinding, as the MCP spec warns) or change anything elsewhere.
        # A WebSocket is always guarded: browsers let any page open one (cross-site WebSocket hijacking).
        guarded = (
            websocket
            or path == "/mcp"
            or (scope["method"] not in _SAFE_METHODS and not path.startswith(PUBLIC_PREFIXES))
        )
        if origin is not None and guarded and not self._origin_allowed(origin, headers):
            await _error(
                deny, path, 403, "forbidden", f"Origin {origin!r} is not allowed. Add it with --allowed-origins."
            )
            return
        if websocket:
            # Every handshake's credential, with a token set or not: a client
            # secret is used up here, and carries the session it was made for.
            try:
                identity = await authenticate_websocket(scope, token=self._token_text, secrets=self._secrets)
            except RealtimeRefused as refused:
                challenge = {"www-authenticate": 'Bearer realm="whisper-mcp"'} if refused.status == 401 else None
                await _error(deny, path, refused.status, refused.code, refused.message, challenge)
                return
            scope.setdefault("state", {})[IDENTITY_STATE] = identity
            await self.app(scope, receive, send)
            return
        if self._token is not None and not _public(path) and not self._authorized(headers):
            await _error(
                deny,
                path,
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


def _denying_websocket(scope: Scope, receive: Receive, send: Send) -> Send:
    """``send`` for refusing a WebSocket handshake with an HTTP answer: as a
    denial response where the server supports one, else as a close (which
    the server answers with 403)."""

    async def deny(message: Message) -> None:
        if message["type"] == "http.response.start":
            await receive()  # websocket.connect
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({**message, "type": "websocket.http.response.start"})
            else:
                await send({"type": "websocket.close", "code": 1008})
        elif message["type"] == "http.response.body":
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({**message, "type": "websocket.http.response.body"})
        else:
            await send(message)

    return deny


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _error(
    send: Send, path: str, status: int, code: str, message: str, extra: dict[str, str] | None = None
) -> None:
    # Under /v1/ in OpenAI's shape, which its SDKs and tools read.
    shape = (
        error_body(message, status, code=code)
        if path.startswith(V1_PREFIX)
        else {"error": {"code": code, "message": message}}
    )
    body = json.dumps(shape).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
