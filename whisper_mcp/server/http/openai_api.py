"""OpenAI-compatible audio endpoints, so the official SDKs and tools built for
``api.openai.com`` work against this server unchanged.

* ``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations``:
  multipart like OpenAI's; the job goes through the same durable queue as
  ``POST /transcribe`` and the request is answered when it ends; with
  ``stream=true``, server-sent events as OpenAI sends them, a text delta per
  segment as it is decoded. A client that hangs up cancels its job.
* ``GET /v1/models`` and ``GET /v1/models/{model}``: the server's models, plus
  ``whisper-1`` as an alias of its default model.

Errors come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
with the HTTP status our own routes use, the router's 404 and 405 included.
Answers follow OpenAI's published schemas: a field OpenAI's schema types as an
array or an object is left out rather than sent as ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_mcp.errors import (
    AudioTooLong,
    Conflict,
    InvalidAudio,
    InvalidInput,
    JobNotFound,
    PayloadTooLarge,
    ServiceError,
    UnknownModel,
    storage_fault,
)
from whisper_mcp.languages import LANGUAGES
from whisper_mcp.options import english_only
from whisper_mcp.queue.jobs import FINISHED_STATUSES, JobStatus
from whisper_mcp.server.http.diarized import diarized_json
from whisper_mcp.server.http.forms import known_speakers, names_known_speakers, read_form
from whisper_mcp.server.http.openai_errors import openai_error
from whisper_mcp.server.http.sse import KEEPALIVE, EventStream, event
from whisper_mcp.server.results import JobRecord
from whisper_mcp.server.service import Submission, TranscriptionService, join_text

OPENAI_MODEL_ALIAS = "whisper-1"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("word", "segment")
# The OpenAI SDKs send a list as repeated "name[]" parts; some clients omit the brackets.
_GRANULARITY_FIELDS = ("timestamp_granularities[]", "timestamp_granularities")
_INCLUDE_FIELDS = ("include[]", "include")
# What include[] may ask for: OpenAI's one value.
INCLUDES = ("logprobs",)
_FIELDS = ("model", "language", "prompt", "response_format", "temperature", "stream")
# Not OpenAI's: this server's own decoding options, under the names POST /transcribe uses.
_EXTENSION_FIELDS = ("vad_filter", "hotwords")
# service.wait returns at least this often; a watcher beside it notices a hang-up at once.
_WAIT_SECONDS = 50.0
_TEXT = "text/plain; charset=utf-8"


# -- errors ---------------------------------------------------------------


def _param_of(exc: ServiceError) -> str | None:
    if isinstance(exc, UnknownModel):
        return "model"
    if isinstance(exc, (InvalidAudio, AudioTooLong, PayloadTooLarge)):
        return "file"
    param = getattr(exc, "param", None)
    if param is None and isinstance(exc, InvalidInput):
        # Our option errors start with the option's name; give OpenAI's name.
        for prefix, name in _PARAM_PREFIXES:
            if exc.message.startswith(prefix):
                return name
    return param


_PARAM_PREFIXES = (
    ("temperature", "temperature"),
    ("initial_prompt", "prompt"),
    ("vad_filter", "vad_filter"),
    ("hotwords", "hotwords"),
    ("Unknown language", "language"),
    ("Model ", "model"),  # "Model 'tiny.en' is English-only; ..."
)


class _BadParam(InvalidInput):
    """A 400 that names the offending OpenAI parameter."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


Handler = Callable[[Request], Awaitable[Response]]


def _openai_errors(service: TranscriptionService) -> Callable[[Handler], Handler]:
    """A route's refusals (and a full disk or an absent database) in OpenAI's
    shape, counted as the other routes count theirs; anything else is a bug,
    a 500 as anywhere."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                fault = exc if isinstance(exc, ServiceError) else storage_fault(exc)
                if fault is None:
                    raise
                service.count_error(fault.code)
                return openai_error(fault.message, fault.status_code, param=_param_of(fault), code=fault.code)

        return wrapped

    return decorate


class _RouterErrors:
    """The /v1 router's own 404 and 405 in OpenAI's shape: the router raises
    them, and without this they would reach the app's handlers and come back
    in the REST routes' shape."""

    def __init__(self, router: ASGIApp) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            request = Request(scope)
            if exc.status_code == 405:
                message = f"{request.method} is not allowed on {request.url.path}."
            else:
                message = f"No route {request.method} {request.url.path}. See GET /v1/models."
            response = openai_error(message, exc.status_code, code=f"http_{exc.status_code}", headers=exc.headers)
            await response(scope, receive, send)


# -- requests -------------------------------------------------------------


def _resolve_model(service: TranscriptionService, name: str | None) -> str | None:
    """The model a /v1 request names; None for whisper-1 or none, which the
    service serves as it serves a request naming no model (language routing)."""
    if name is None or name.strip() == "" or name.strip() == OPENAI_MODEL_ALIAS:
        return None
    return service.model_name(name)


def _response_format(raw: str | None) -> str:
    fmt = (raw or "json").strip().lower() or "json"
    if fmt not in RESPONSE_FORMATS:
        raise _BadParam(
            "response_format",
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {raw!r}.",
            "unsupported_value",
        )
    return fmt


def _temperature(raw: str | None) -> str | None:
    # OpenAI: 0 (the default) means "raise the temperature when decoding fails",
    # which is Whisper's fallback schedule; our None.
    if raw is None or raw.strip() == "":
        return None
    try:
        if float(raw) == 0.0:
            return None
    except ValueError:
        raise _BadParam("temperature", f"temperature must be a number from 0 to 1, got {raw!r}.") from None
    return raw


def _known_speakers(repeated: dict[str, list[str]], diarized: bool) -> list[tuple[str, str]]:
    # OpenAI names speakers in diarized_json only.
    if names_known_speakers(repeated) and not diarized:
        raise InvalidInput(
            "known_speaker_names and known_speaker_references apply with response_format=diarized_json only."
        )
    return known_speakers(repeated)


def _includes(values: list[str]) -> set[str]:
    wanted = {v.strip().lower() for v in values if v.strip()}
    unknown = wanted - set(INCLUDES)
    if unknown:
        raise _BadParam("include", f"include may hold {', '.join(INCLUDES)}, got {sorted(unknown)!r}.")
    return wanted


def _logprobs(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's per-token log probabilities, from Whisper's words: each word is
    one entry (its text as decoded, the log of its probability, its UTF-8 bytes)."""
    return [
        {
            "token": str(w.get("word") or ""),
            "logprob": round(math.log(max(float(w.get("probability") or 0.0), 1e-12)), 6),
            "bytes": list(str(w.get("word") or "").encode()),
        }
        for s in segments
        for w in s.get("words") or []
    ]


def _granularities(values: list[str]) -> set[str]:
    wanted = {v.strip().lower() for v in values if v.strip()}
    unknown = wanted - set(GRANULARITIES)
    if unknown:
        raise _BadParam(
            "timestamp_granularities",
            f"timestamp_granularities may hold 'word' and 'segment', got {sorted(unknown)!r}.",
        )
    return wanted


async def _await_job(service: TranscriptionService, request: Request, job_id: str) -> JobRecord | None:
    """The job's final status, or None when the client hung up first (the job is
    then cancelled)."""
    gone = False
    record: JobRecord | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            # The body has been read: the next message is the disconnect.
            nonlocal gone
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        while True:
            record = await service.wait(job_id, _WAIT_SECONDS)
            if JobStatus(record["status"]).finished:
                break
        tg.cancel_scope.cancel()
    if gone:
        with anyio.CancelScope(shield=True):
            await _cancel(service, job_id)
        return None
    return record


async def _cancel(service: TranscriptionService, job_id: str) -> None:
    """Nobody waits for the job any more: stop it."""
    try:
        await service.cancel(job_id)
    except (Conflict, JobNotFound):
        pass  # ended meanwhile


def _job_header(job_id: str) -> dict[str, str]:
    return {"x-whisper-job-id": job_id}


def _stream(raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise _BadParam("stream", f"stream must be true or false, got {raw!r}.")


def _usage(duration: float) -> dict[str, Any]:
    # As OpenAI bills whisper-1: whole seconds of audio.
    return {"type": "duration", "seconds": math.ceil(max(0.0, duration))}


async def _stream_events(service: TranscriptionService, job_id: str, logprobs: bool) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per segment as
    it is decoded, then ``transcript.text.done`` with the whole text;
    an ``error`` object if the job fails. The deltas join to the done text.
    With ``logprobs`` each event carries its words' log probabilities."""
    sent = 0

    def deltas(segments: list[dict[str, Any]]) -> Iterator[bytes]:
        """Events for ``segments``, which follow the ``sent`` ones already streamed."""
        nonlocal sent
        for segment in segments:
            text = str(segment.get("text") or "").strip()
            if text:
                # Without logprobs asked for, none: OpenAI's schema has an array there or no field at all.
                delta: dict[str, Any] = {"type": "transcript.text.delta", "delta": text if sent == 0 else " " + text}
                if logprobs:
                    delta["logprobs"] = _logprobs([segment])
                yield event(delta)
            sent += 1

    async for snapshot in service.follow(job_id):
        status = snapshot.record["status"]
        if status == JobStatus.PROCESSING.value:
            # Those decoded since the last snapshot, in one write.
            yield b"".join(deltas(snapshot.segments)) or KEEPALIVE
            continue
        if status == JobStatus.COMPLETED.value:
            result = await service.result(job_id)
            segments = list(result.get("segments") or [])
            for chunk in deltas(segments[sent:]):
                yield chunk
            # No usage: OpenAI's schema has only token counts for this event, and
            # Whisper bills by duration (json and verbose_json carry that).
            done: dict[str, Any] = {"type": "transcript.text.done", "text": join_text(segments)}
            if logprobs:
                done["logprobs"] = _logprobs(segments)
            yield event(done)
            return
        if status in FINISHED_STATUSES:
            message = snapshot.record.get("error") or f"The transcription {status}."
            error = {"message": f"Job {job_id!r} {status}: {message}", "type": "server_error", "code": f"job_{status}"}
            yield event({"error": {**error, "param": None}})
            return
        yield KEEPALIVE  # queued, or nothing new yet


def _language_name(code: str | None, model: str) -> str:
    if code:
        return LANGUAGES.get(code, code)
    return "english" if english_only(model) else ""


def _verbose(
    result: dict[str, Any], task: str, model: str, temperature: float, granularities: set[str]
) -> dict[str, Any]:
    segments = result.get("segments") or []
    body: dict[str, Any] = {
        "task": task,
        "language": "english" if task == "translate" else _language_name(result.get("language"), model),
        "duration": float(result.get("duration") or 0.0),
        "text": str(result.get("text") or ""),
    }
    # As OpenAI: segments unless only word timestamps were asked for.
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": int(s.get("id", i)),
                # The decoder's own figures; results stored before they were kept have none.
                "seek": int(s.get("seek") or 0),
                "start": float(s.get("start", 0.0)),
                "end": float(s.get("end", 0.0)),
                # OpenAI keeps Whisper's leading space on segment text.
                "text": " " + str(s.get("text") or "").strip(),
                "tokens": [int(t) for t in s.get("tokens") or []],
                "temperature": float(s["temperature"]) if s.get("temperature") is not None else temperature,
                "avg_logprob": float(s.get("avg_logprob") or 0.0),
                "compression_ratio": float(s.get("compression_ratio") or 0.0),
                "no_speech_prob": float(s.get("no_speech_prob") or 0.0),
            }
            for i, s in enumerate(segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {
                "word": str(w.get("word", "")).strip(),
                "start": float(w.get("start", 0.0)),
                "end": float(w.get("end", 0.0)),
            }
            for s in segments
            for w in s.get("words") or []
        ]
    return body


def routes(service: TranscriptionService) -> list[BaseRoute]:
    errors = _openai_errors(service)

    async def run(request: Request, task: str) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput(
                "Send the audio as multipart/form-data with the file in a field named 'file', as the OpenAI SDKs do."
            )
        form = await read_form(request, service, _FIELDS + _GRANULARITY_FIELDS + _INCLUDE_FIELDS + _EXTENSION_FIELDS)
        if form.file is None:
            raise _BadParam("file", "No file received: put the audio in a multipart field named 'file'.", "missing")
        try:
            fields = form.fields
            stream = _stream(fields.get("stream"))
            fmt = _response_format(fields.get("response_format"))
            model = _resolve_model(service, fields.get("model"))
            temperature = _temperature(fields.get("temperature"))
            granularities = (
                _granularities([v for name in _GRANULARITY_FIELDS for v in form.repeated.get(name, [])])
                if task == "transcribe" and fmt == "verbose_json"
                else set()
            )
            # Word probabilities are the log probabilities' source: word timings on.
            logprobs = "logprobs" in _includes([v for name in _INCLUDE_FIELDS for v in form.repeated.get(name, [])])
            submission = Submission(
                filename=form.filename,
                model=model,
                language=fields.get("language") if task == "transcribe" else None,
                task=task,
                initial_prompt=fields.get("prompt"),
                temperature=temperature,
                word_timestamps="word" in granularities or logprobs,
                diarize=fmt == "diarized_json",
                **{name: fields.get(name) for name in _EXTENSION_FIELDS},
                known_speakers=_known_speakers(form.repeated, fmt == "diarized_json"),
            )
        except BaseException:
            await service.discard(form.file)
            raise
        record = await service.submit(form.file, submission)
        job_id = record["job_id"]
        if stream:
            return EventStream(
                _stream_events(service, job_id, logprobs),
                on_hangup=lambda: _cancel(service, job_id),
                headers=_job_header(job_id),
            )
        final = await _await_job(service, request, job_id)
        if final is None:
            return Response(status_code=499)  # nobody is listening
        headers = {"x-whisper-job-id": job_id}
        if final["status"] != JobStatus.COMPLETED.value:
            message = final.get("error") or f"The transcription {final['status']}."
            response = openai_error(f"Job {job_id!r} {final['status']}: {message}", 500, code=f"job_{final['status']}")
            response.headers.update(headers)
            return response
        if fmt == "text":
            return PlainTextResponse(await service.transcript(job_id, "txt"), media_type=_TEXT, headers=headers)
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(await service.transcript(job_id, fmt), media_type=_TEXT, headers=headers)
        result = json.loads(await service.transcript(job_id, "json"))
        usage = _usage(float(result.get("duration") or 0.0))
        if fmt == "json":
            body: dict[str, Any] = {"text": str(result.get("text") or "")}
            if logprobs:
                body["logprobs"] = _logprobs(list(result.get("segments") or []))
            return JSONResponse({**body, "usage": usage}, headers=headers)
        if fmt == "diarized_json":
            return JSONResponse(diarized_json(result), headers=headers)
        used = 0.0 if temperature is None else float(temperature)
        decoded_by = str(result.get("model") or model or service.default_model)
        return JSONResponse(
            {**_verbose(result, task, decoded_by, used, granularities), "usage": usage}, headers=headers
        )

    @errors
    async def transcriptions(request: Request) -> Response:
        return await run(request, "transcribe")

    @errors
    async def translations(request: Request) -> Response:
        return await run(request, "translate")

    async def model_ids() -> list[str]:
        listing = await service.models()
        names = [m["name"] for m in listing["models"]]
        return [OPENAI_MODEL_ALIAS, *(n for n in names if n != OPENAI_MODEL_ALIAS)]

    def model_object(name: str) -> dict[str, Any]:
        # OpenAI's Model object, and what the name means here (whisper-1: none named).
        served = service.serves(None if name == OPENAI_MODEL_ALIAS else name)
        return {"id": name, "object": "model", "created": 0, "owned_by": "whisper-mcp", "description": served}

    @errors
    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_object(n) for n in await model_ids()]})

    @errors
    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in await model_ids():
            return openai_error(
                f"The model {name!r} does not exist. See GET /v1/models.", 404, param="model", code="model_not_found"
            )
        return JSONResponse(model_object(name))

    v1 = Router(
        [
            Route("/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/audio/translations", translations, methods=["POST"]),
            Route("/models", list_models, methods=["GET"]),
            Route("/models/{model:path}", get_model, methods=["GET"]),
        ]
    )
    return [Mount("/v1", app=_RouterErrors(v1))]
