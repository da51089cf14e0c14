"""Realtime client secrets: short-lived, single-use keys for the transcription
WebSocket, so a browser never holds the service's long-lived token.

``POST /v1/realtime/client_secrets`` (with the token) makes one, in OpenAI's
shape: ``{"value": "ek_…", "expires_at", "session"}``. The handshake of
``/v1/realtime`` that presents it uses it up, and the session configuration it
was made with (model, language, prompt, turn detection) becomes the socket's
starting configuration, which the client may still change with
``session.update``.

Secrets live in the job database (hashed), so any replica takes a secret any
other made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from whisper_mcp.errors import InvalidInput
from whisper_mcp.queue.client_secrets import SQLClientSecretStore
from whisper_mcp.server.realtime import protocol
from whisper_mcp.server.realtime.protocol import ProtocolError, SessionConfig

SECRET_PREFIX = "ek_"
DEFAULT_TTL_SECONDS = 60
MIN_TTL_SECONDS = 10
# Shorter than OpenAI's two hours: a secret is meant to be used at once, by
# the page that asked for it.
MAX_TTL_SECONDS = 600


@dataclass(frozen=True)
class ClientSecret:
    value: str  # shown once, never stored
    created_at: int
    expires_at: int
    session: dict[str, Any]  # as the client sent it, checked


class ClientSecrets:
    """Makes and redeems client secrets (the registry any replica shares)."""

    def __init__(self, store: SQLClientSecretStore) -> None:
        self._store = store

    async def create(self, body: object, check: Callable[[SessionConfig], object] | None = None) -> dict[str, Any]:
        """A new secret for a request body in OpenAI's shape; the answer in
        OpenAI's shape. ``InvalidInput`` in words for a body it cannot take;
        ``check`` refuses a session the socket would refuse (a ``ServiceError``:
        a model it does not serve, a language it does not know)."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InvalidInput('The body must be a JSON object, e.g. {"expires_after": {"seconds": 60}}.')
        unknown = sorted(set(body) - {"expires_after", "session"})
        if unknown:
            raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}: send expires_after and session only.")
        ttl = parse_expires_after(body.get("expires_after"))
        session, config = parse_session(body.get("session"))
        if check is not None:
            check(config)
        value = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        secret = ClientSecret(value, now, now + ttl, session)
        await to_thread.run_sync(self._store.expire, time.time())
        await to_thread.run_sync(
            self._store.create, hash_secret(value), json.dumps(session), float(now), float(secret.expires_at)
        )
        return {"value": value, "expires_at": secret.expires_at, "session": session_object(config, secret.expires_at)}

    async def redeem(self, value: str) -> dict[str, Any] | None:
        """Use a secret up: the session configuration it carries, or None if it
        is unknown, used or expired (the three are not told apart)."""
        if not value.startswith(SECRET_PREFIX):
            return None
        found = await to_thread.run_sync(self._store.redeem, hash_secret(value), time.time())
        return None if found is None else dict(json.loads(found))

    def sweep(self, now: float) -> int:
        """Blocking: forget expired secrets."""
        return self._store.expire(now)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def parse_expires_after(value: object) -> int:
    """Seconds a new secret lives: ``{"anchor": "created_at", "seconds": N}``, both optional."""
    if value is None:
        return DEFAULT_TTL_SECONDS
    if not isinstance(value, dict):
        raise InvalidInput('expires_after must be an object, e.g. {"anchor": "created_at", "seconds": 60}.')
    anchor = value.get("anchor", "created_at")
    if anchor != "created_at":
        raise InvalidInput(f"expires_after.anchor must be 'created_at' (the only anchor), got {anchor!r}.")
    seconds = value.get("seconds", DEFAULT_TTL_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidInput(f"expires_after.seconds must be a whole number of seconds, got {seconds!r}.")
    if not MIN_TTL_SECONDS <= seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(
            f"expires_after.seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} on this server, "
            f"got {seconds}. A client secret is for one connection made at once; ask for a new one each time."
        )
    return seconds


def parse_session(value: object) -> tuple[dict[str, Any], SessionConfig]:
    """The session configuration a secret carries: a transcription session,
    checked as the socket checks a ``session.update`` (the socket still
    checks the model and language when it applies it). The configuration as
    sent, and as the socket will hold it."""
    if value is None:
        value = {"type": "transcription"}
    if not isinstance(value, dict):
        raise InvalidInput('session must be an object, e.g. {"type": "transcription"}.')
    try:
        return dict(value), protocol.update(SessionConfig(), value, legacy=False)
    except ProtocolError as exc:
        where = f" ({exc.param})" if exc.param else ""
        raise InvalidInput(exc.message + where) from None


def session_object(config: SessionConfig, expires_at: int) -> dict[str, Any]:
    """OpenAI's transcription session object: what a socket opened with the secret starts with."""
    return {**protocol.session_object(config, protocol.new_id("sess"), legacy=False), "expires_at": expires_at}
