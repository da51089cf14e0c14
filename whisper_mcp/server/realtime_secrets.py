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
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from whisper_mcp.errors import InvalidInput
from whisper_mcp.queue.client_secrets import SQLClientSecretStore

SECRET_PREFIX = "ek_"
DEFAULT_TTL_SECONDS = 60
MIN_TTL_SECONDS = 10
# Shorter than OpenAI's two hours: a secret is meant to be used at once, by
# the page that asked for it.
MAX_TTL_SECONDS = 600
AUDIO_RATE = 24000
# OpenAI's server VAD defaults, what a session without turn_detection gets.
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
_SESSION_KEYS = {"type", "audio", "include"}
_INPUT_KEYS = {"format", "transcription", "turn_detection", "noise_reduction"}
_TRANSCRIPTION_KEYS = {"model", "language", "prompt"}
_MAX_TEXT = 4096


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

    async def create(self, body: object) -> dict[str, Any]:
        """A new secret for a request body in OpenAI's shape; the answer in
        OpenAI's shape. ``InvalidInput`` in words for a body it cannot take."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InvalidInput('The body must be a JSON object, e.g. {"expires_after": {"seconds": 60}}.')
        unknown = sorted(set(body) - {"expires_after", "session"})
        if unknown:
            raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}: send expires_after and session only.")
        ttl = parse_expires_after(body.get("expires_after"))
        session = parse_session(body.get("session"))
        value = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        secret = ClientSecret(value, now, now + ttl, session)
        await to_thread.run_sync(self._store.expire, time.time())
        await to_thread.run_sync(
            self._store.create, hash_secret(value), json.dumps(session), float(now), float(secret.expires_at)
        )
        return {"value": value, "expires_at": secret.expires_at, "session": session_object(session, secret.expires_at)}

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


def parse_session(value: object) -> dict[str, Any]:
    """The session configuration a secret carries, checked for shape: a
    transcription session (the only kind this server offers). The socket
    checks the values themselves (a model it serves, a language it knows)
    when it applies them."""
    if value is None:
        return {"type": "transcription"}
    if not isinstance(value, dict):
        raise InvalidInput('session must be an object, e.g. {"type": "transcription"}.')
    if value.get("type") != "transcription":
        raise InvalidInput(
            f"session.type must be 'transcription', got {value.get('type')!r}: this server offers "
            "transcription sessions only (GET /v1/realtime?intent=transcription)."
        )
    _known("session", value, _SESSION_KEYS)
    audio = _object("session.audio", value.get("audio"))
    if audio is not None:
        _known("session.audio", audio, {"input"})
        audio_input = _object("session.audio.input", audio.get("input"))
        if audio_input is not None:
            _known("session.audio.input", audio_input, _INPUT_KEYS)
            _check_format(audio_input.get("format"))
            transcription = _object("session.audio.input.transcription", audio_input.get("transcription"))
            if transcription is not None:
                _known("session.audio.input.transcription", transcription, _TRANSCRIPTION_KEYS)
                for key in _TRANSCRIPTION_KEYS:
                    _text(f"session.audio.input.transcription.{key}", transcription.get(key))
            _object("session.audio.input.turn_detection", audio_input.get("turn_detection"))
            _object("session.audio.input.noise_reduction", audio_input.get("noise_reduction"))
    include = value.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise InvalidInput("session.include must be a list of strings.")
    return dict(value)


def session_object(session: dict[str, Any], expires_at: int) -> dict[str, Any]:
    """OpenAI's transcription session object for a secret's configuration,
    with the defaults filled in that a socket starts with."""
    audio_input = dict((session.get("audio") or {}).get("input") or {})
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_" + secrets.token_hex(12),
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": audio_input.get("format") or {"type": "audio/pcm", "rate": AUDIO_RATE},
                "transcription": audio_input.get("transcription") or {},
                "turn_detection": audio_input["turn_detection"]
                if "turn_detection" in audio_input
                else dict(DEFAULT_TURN_DETECTION),
                "noise_reduction": audio_input.get("noise_reduction"),
            }
        },
        "include": list(session.get("include") or []),
    }


def _known(where: str, value: dict[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(value) - keys)
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {', '.join(unknown)}; it takes {', '.join(sorted(keys))}.")


def _object(where: str, value: object) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object or null, got {type(value).__name__}.")
    return value


def _text(where: str, value: object) -> None:
    if value is not None and not (isinstance(value, str) and len(value) <= _MAX_TEXT):
        raise InvalidInput(f"{where} must be text of at most {_MAX_TEXT} characters.")


def _check_format(value: object) -> None:
    fmt = _object("session.audio.input.format", value)
    if fmt is None:
        return
    if fmt.get("type", "audio/pcm") != "audio/pcm" or fmt.get("rate", AUDIO_RATE) != AUDIO_RATE:
        raise InvalidInput(
            f"session.audio.input.format must be {{'type': 'audio/pcm', 'rate': {AUDIO_RATE}}} "
            f"(16-bit PCM, mono, {AUDIO_RATE} Hz, little-endian), got {fmt!r}."
        )
