"""``GET /v1/realtime?intent=transcription``: live transcription over a
WebSocket, speaking OpenAI's Realtime transcription protocol
(``server.realtime``), so ``client.realtime.connect(...)`` of the official
SDKs works against this server.

The access guard (``security.AccessGuard``) checks the handshake as it
checks every request: Host, Origin, and the credential (the bearer token,
or a client secret from ``POST /v1/realtime/client_secrets``, as a header
or OpenAI's browser subprotocols: ``realtime_auth``). A session beyond
``--max-realtime-sessions`` is accepted, told why in an ``error`` event, and
closed (1013, try again later), which the SDKs show as they show any error.
Query ``store=false`` keeps the session out of the job list; ``store=audio``
keeps its audio too, as a WAV the job downloads (``?format=wav``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from whisper_mcp.server.http.openai_errors import openai_error
from whisper_mcp.server.http.realtime_auth import IDENTITY_STATE, RealtimeIdentity
from whisper_mcp.server.live import TooManySessions
from whisper_mcp.server.realtime import protocol
from whisper_mcp.server.realtime.session import RealtimeSession
from whisper_mcp.server.service import TranscriptionService

log = logging.getLogger("whisper_mcp.server.realtime")

PATH = "/v1/realtime"
REALTIME_SUBPROTOCOL = "realtime"
# Close codes: the session limit (try again later), and a refused request.
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
_NO = ("false", "0", "no", "off")
_YES = ("true", "1", "yes", "on")
AUDIO = "audio"


def routes(service: TranscriptionService) -> list[BaseRoute]:
    async def realtime(websocket: WebSocket) -> None:
        # Browsers offer OpenAI's "realtime" subprotocol (beside credentials in
        # others); a handshake that offers it fails unless it is chosen.
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None)
        # Who opened it (the access guard checked): a client secret brings its session.
        identity: RealtimeIdentity | None = websocket.scope.get("state", {}).get(IDENTITY_STATE)
        intent = websocket.query_params.get("intent", "transcription")
        if intent != "transcription":
            await _refuse(
                websocket,
                POLICY_VIOLATION,
                "intent",
                f"This server runs transcription sessions only: connect with ?intent=transcription, not {intent!r}.",
            )
            return
        asked = websocket.query_params.get("store", "")
        store = asked.strip().lower() or "true"
        if store not in (*_YES, *_NO, AUDIO):
            await _refuse(
                websocket,
                POLICY_VIOLATION,
                "store",
                f"store must be true (keep the transcript as a job, the default), false (keep nothing) or "
                f"audio (keep the transcript and the session's audio), not {asked!r}.",
            )
            return
        try:
            service.live.admit()
        except TooManySessions as exc:
            await _refuse(websocket, TRY_AGAIN_LATER, None, exc.message, code=exc.code)
            return
        try:
            await _serve(
                websocket,
                service,
                keep=store not in _NO,
                keep_audio=store == AUDIO,
                initial=identity.session if identity else None,
            )
        finally:
            service.live.leave()

    async def not_upgraded(request: Request) -> Response:
        return openai_error(
            "This is a WebSocket: connect to ws://.../v1/realtime?intent=transcription "
            "(OpenAI's Realtime transcription protocol), as client.realtime.connect(...) does.",
            426,
            code="upgrade_required",
            headers={"upgrade": "websocket"},
        )

    return [WebSocketRoute(PATH, realtime), Route(PATH, not_upgraded, methods=["GET"])]


async def _serve(
    websocket: WebSocket,
    service: TranscriptionService,
    *,
    keep: bool,
    keep_audio: bool,
    initial: dict[str, Any] | None,
) -> None:
    lock = anyio.Lock()  # the decode task and the reader both send

    async def send(event: dict[str, Any]) -> None:
        async with lock:
            if websocket.application_state is WebSocketState.CONNECTED:
                try:
                    await websocket.send_json(event)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    pass  # the client left: the reader sees it next

    session = RealtimeSession(service.live, send, keep=keep, keep_audio=keep_audio)
    await session.start()
    if initial is not None:  # as if the client's first event: answered with session.updated
        await session.handle(json.dumps({"type": "session.update", "session": initial}))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            await session.handle(message.get("text") or message.get("bytes") or b"")
    except WebSocketDisconnect:
        pass
    finally:
        with anyio.CancelScope(shield=True):
            job_id = await session.close()
        if job_id is not None:
            log.info("realtime session %s kept as job %s", session.id, job_id)


async def _refuse(websocket: WebSocket, close_code: int, param: str | None, message: str, *, code: str = "") -> None:
    error = protocol.ProtocolError(message, code=code or "invalid_request", param=param)
    await websocket.send_json(protocol.error(error))
    await websocket.close(close_code, reason=message[:120])


__all__ = ["PATH", "routes"]
