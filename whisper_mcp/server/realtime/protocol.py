"""OpenAI's Realtime transcription protocol: reading the client's events and
shaping the server's, as the official SDKs send and parse them
(``openai.types.realtime``). Pure functions and records; the session acts.

Two session shapes are read: the current one (``session.update`` with
``session.type: "transcription"`` and ``audio.input``), answered with
``session.updated``; and the earlier beta one (``transcription_session.update``
with ``input_audio_format``, ``input_audio_transcription``), answered with
``transcription_session.updated`` in that shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

# An append carries at most this much audio (OpenAI's limit).
MAX_APPEND_BYTES = 15 * 1024 * 1024
LOGPROBS = "item.input_audio_transcription.logprobs"
# OpenAI's transcription model names: this server's default model serves them
# (language routing included), as /v1/audio/transcriptions serves whisper-1.
OPENAI_MODEL_PREFIXES = ("whisper-1", "gpt-")
# The formats, in each shape: the beta name -> the current one.
FORMAT_TYPES = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
NOISE_REDUCTIONS = ("near_field", "far_field")
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class ProtocolError(Exception):
    """A client event this server cannot act on: answered with an ``error``
    event (``invalid_request_error``), and the socket stays open."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_value",
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind
        self.event_id: str | None = None  # the client event's, when it had one


@dataclass(frozen=True)
class TurnDetection:
    """``server_vad``, with OpenAI's defaults."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    format: str = "pcm16"  # a key of FORMAT_TYPES
    model: str | None = None  # as the client named it; None: the server's choice
    language: str | None = None
    prompt: str | None = None
    keywords: tuple[str, ...] = ()
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    noise_reduction: str | None = None  # accepted, not applied
    logprobs: bool = False


@dataclass(frozen=True)
class ClientEvent:
    """One client event, read: its type, its ``event_id`` (echoed in errors)
    and what it carries (``session``: the raw update; ``audio``: the bytes)."""

    type: str
    event_id: str | None = None
    session: dict[str, Any] | None = None
    audio: bytes = b""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def read_event(text: str | bytes) -> ClientEvent:
    """A client message as a ``ClientEvent``; ``ProtocolError`` saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"The message is not valid JSON ({exc}); send each event as one JSON object.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError("Each event must be a JSON object with a 'type'.", code="invalid_json")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    try:
        return _read(data, event_id)
    except ProtocolError as exc:
        exc.event_id = event_id
        raise


def _read(data: dict[str, Any], event_id: str | None) -> ClientEvent:
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("The event has no 'type'.", code="missing_required_parameter", param="type")
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(
            f"Unknown or unsupported event type {kind!r} in a transcription session; "
            f"send one of: {', '.join(CLIENT_EVENTS)}.",
            code="invalid_event_type",
            param="type",
        )
    if kind in ("session.update", "transcription_session.update"):
        session = data.get("session")
        if not isinstance(session, dict):
            raise ProtocolError("'session' must be an object.", param="session")
        return ClientEvent(kind, event_id, session=session)
    if kind == "input_audio_buffer.append":
        return ClientEvent(kind, event_id, audio=_audio(data.get("audio")))
    return ClientEvent(kind, event_id)


def _audio(value: object) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("'audio' must be a base64 string of audio bytes.", param="audio")
    if len(value) > (MAX_APPEND_BYTES * 4) // 3 + 4:
        raise ProtocolError(
            "An append may carry at most 15 MiB of audio; send it in smaller chunks.",
            code="audio_too_large",
            param="audio",
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64.", param="audio") from None


# -- session updates --------------------------------------------------------


def update(config: SessionConfig, session: dict[str, Any], *, legacy: bool) -> SessionConfig:
    """``config`` with a ``session.update``'s (or, ``legacy``, a
    ``transcription_session.update``'s) fields applied; fields left out keep
    their values."""
    return _legacy_update(config, session) if legacy else _update(config, session)


def _update(config: SessionConfig, session: dict[str, Any]) -> SessionConfig:
    _known(session, "session", ("type", "audio", "include", "id", "object", "expires_at", "client_secret"))
    if session.get("type") != "transcription":
        raise ProtocolError(
            "This server runs transcription sessions only: set session.type to 'transcription' "
            "(and connect with ?intent=transcription).",
            param="session.type",
        )
    if "include" in session:
        config = replace(config, logprobs=_include(session["include"], "session.include"))
    audio = session.get("audio")
    if audio is None:
        return config
    audio = _object(audio, "session.audio")
    _known(audio, "session.audio", ("input",))
    inputs = _object(audio.get("input") or {}, "session.audio.input")
    where = "session.audio.input"
    _known(inputs, where, ("format", "transcription", "turn_detection", "noise_reduction"))
    if "format" in inputs:
        config = replace(config, format=_format(inputs["format"], f"{where}.format"))
    if "transcription" in inputs:
        config = _transcription(config, inputs["transcription"], f"{where}.transcription")
    if "turn_detection" in inputs:
        config = replace(config, turn_detection=_turns(inputs["turn_detection"], f"{where}.turn_detection"))
    if "noise_reduction" in inputs:
        config = replace(config, noise_reduction=_noise(inputs["noise_reduction"], f"{where}.noise_reduction"))
    return config


def _legacy_update(config: SessionConfig, session: dict[str, Any]) -> SessionConfig:
    names = ("input_audio_format", "input_audio_transcription", "turn_detection", "input_audio_noise_reduction")
    _known(session, "session", (*names, "include", "modalities", "client_secret", "id", "object", "expires_at"))
    if "input_audio_format" in session:
        fmt = session["input_audio_format"]
        if fmt not in FORMAT_TYPES:
            raise ProtocolError(
                f"session.input_audio_format must be one of {', '.join(FORMAT_TYPES)}, got {fmt!r}.",
                param="session.input_audio_format",
            )
        config = replace(config, format=fmt)
    if "input_audio_transcription" in session:
        config = _transcription(config, session["input_audio_transcription"], "session.input_audio_transcription")
    if "turn_detection" in session:
        config = replace(config, turn_detection=_turns(session["turn_detection"], "session.turn_detection"))
    if "input_audio_noise_reduction" in session:
        noise = _noise(session["input_audio_noise_reduction"], "session.input_audio_noise_reduction")
        config = replace(config, noise_reduction=noise)
    if "include" in session:
        config = replace(config, logprobs=_include(session["include"], "session.include"))
    return config


def _known(data: dict[str, Any], where: str, names: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ProtocolError(
            f"Unknown parameter {where}.{unknown[0]}; {where} takes {', '.join(names)}.",
            code="unknown_parameter",
            param=f"{where}.{unknown[0]}",
        )


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object.", param=where)
    return value


def _text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a string or null.", param=where)
    return value.strip() or None


def _format(value: object, where: str) -> str:
    data = _object(value, where)
    _known(data, where, ("type", "rate"))
    by_type = {v: k for k, v in FORMAT_TYPES.items()}
    kind = data.get("type")
    if kind not in by_type:
        raise ProtocolError(f"{where}.type must be one of {', '.join(by_type)}, got {kind!r}.", param=f"{where}.type")
    if kind == "audio/pcm" and data.get("rate", 24000) != 24000:
        raise ProtocolError(
            f"{where}.rate must be 24000 (PCM16 at 24 kHz), got {data.get('rate')!r}.", param=f"{where}.rate"
        )
    return by_type[kind]


def _transcription(config: SessionConfig, value: object, where: str) -> SessionConfig:
    if value is None:
        return replace(config, model=None, language=None, prompt=None, keywords=())
    data = _object(value, where)
    _known(data, where, ("model", "language", "prompt", "keywords", "languages", "delay"))
    if "model" in data:
        model = _text(data["model"], f"{where}.model")
        config = replace(config, model=None if model is None or model.startswith(OPENAI_MODEL_PREFIXES) else model)
    if "language" in data:
        config = replace(config, language=_text(data["language"], f"{where}.language"))
    if "prompt" in data:
        config = replace(config, prompt=_text(data["prompt"], f"{where}.prompt"))
    if "keywords" in data:
        keywords = data["keywords"]
        if keywords is not None and (not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords)):
            raise ProtocolError(f"{where}.keywords must be a list of strings.", param=f"{where}.keywords")
        config = replace(config, keywords=tuple(k.strip() for k in keywords or () if k.strip()))
    return config


def _turns(value: object, where: str) -> TurnDetection | None:
    if value is None:
        return None
    data = _object(value, where)
    ignored = ("create_response", "interrupt_response", "idle_timeout_ms")  # about responses: none here
    _known(data, where, ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", *ignored))
    if data.get("type", "server_vad") != "server_vad":
        raise ProtocolError(
            f"{where}.type must be 'server_vad' (or turn_detection null, to commit yourself); "
            f"this server has no {data.get('type')!r}.",
            param=f"{where}.type",
        )
    turns = TurnDetection()
    threshold = data.get("threshold")
    if threshold is not None:
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
            raise ProtocolError(f"{where}.threshold must be a number from 0 to 1.", param=f"{where}.threshold")
        turns = replace(turns, threshold=float(threshold))
    for name in ("prefix_padding_ms", "silence_duration_ms"):
        ms = data.get(name)
        if ms is None:
            continue
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= 10_000:
            raise ProtocolError(f"{where}.{name} must be whole milliseconds from 0 to 10000.", param=f"{where}.{name}")
        turns = replace(turns, **{name: ms})
    return turns


def _noise(value: object, where: str) -> str | None:
    if value is None:
        return None
    kind = _object(value, where).get("type")
    if kind not in NOISE_REDUCTIONS:
        raise ProtocolError(f"{where}.type must be one of {', '.join(NOISE_REDUCTIONS)}.", param=f"{where}.type")
    return str(kind)


def _include(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, list) or any(item != LOGPROBS for item in value):
        raise ProtocolError(f"{where} may hold only {LOGPROBS!r}.", param=where)
    return LOGPROBS in value


# -- server events ------------------------------------------------------------


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error(exc: ProtocolError) -> dict[str, Any]:
    return event(
        "error",
        error={
            "type": exc.kind,
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": exc.event_id,
        },
    )


def session_object(config: SessionConfig, session_id: str, *, legacy: bool) -> dict[str, Any]:
    """The session as ``session.created``/``session.updated`` (or, ``legacy``,
    ``transcription_session.updated``) carry it."""
    transcription: dict[str, Any] = {"model": config.model or "whisper-1", "language": config.language}
    transcription["prompt"] = config.prompt or ""
    turns = None
    if config.turn_detection is not None:
        turns = {"type": "server_vad", **_fields(config.turn_detection)}
    noise = None if config.noise_reduction is None else {"type": config.noise_reduction}
    include = [LOGPROBS] if config.logprobs else None
    if legacy:
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "modalities": ["text"],
            "input_audio_format": config.format,
            "input_audio_transcription": transcription,
            "turn_detection": turns,
            "input_audio_noise_reduction": noise,
            "include": include,
        }
    fmt: dict[str, Any] = {"type": FORMAT_TYPES[config.format]}
    if config.format == "pcm16":
        fmt["rate"] = 24000
    if config.keywords:
        transcription["keywords"] = list(config.keywords)
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "audio": {
            "input": {"format": fmt, "transcription": transcription, "noise_reduction": noise, "turn_detection": turns}
        },
        "include": include,
    }


def _fields(turns: TurnDetection) -> dict[str, Any]:
    return {
        "threshold": turns.threshold,
        "prefix_padding_ms": turns.prefix_padding_ms,
        "silence_duration_ms": turns.silence_duration_ms,
    }


def logprobs(words: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """OpenAI's logprob entries for (text, logprob) pieces."""
    return [{"token": text, "logprob": lp, "bytes": list(text.encode())} for text, lp in words]


__all__ = [
    "CLIENT_EVENTS",
    "LOGPROBS",
    "MAX_APPEND_BYTES",
    "ClientEvent",
    "ProtocolError",
    "SessionConfig",
    "TurnDetection",
    "error",
    "event",
    "logprobs",
    "new_id",
    "read_event",
    "session_object",
    "update",
]
