"""Plain HTTP routes for callers that do not speak MCP (curl, scripts)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from whisper_mcp.errors import InvalidInput, ServiceError, storage_fault
from whisper_mcp.formats import MEDIA_TYPES
from whisper_mcp.queue.files import StoredUpload
from whisper_mcp.queue.jobs import FINISHED_STATUSES
from whisper_mcp.server.http.bodies import check_declared_length, read_multipart, read_raw
from whisper_mcp.server.http.forms import known_speakers, read_form
from whisper_mcp.server.http.openapi import openapi_spec
from whisper_mcp.server.http.sse import KEEPALIVE, EventStream, event
from whisper_mcp.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from whisper_mcp.server.service import SUBMISSION_FIELDS, Submission, TranscriptionService, check_format

# GET /download's format for a live session's kept audio, beside the transcript formats.
RECORDING_FORMAT = "wav"


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {raw!r}.") from None


def _wait_param(request: Request, most: float) -> float:
    """``?wait=SECONDS`` on GET /status: 0 (answer now) to ``most``."""
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= most:  # NaN fails this too
        raise InvalidInput(f"wait must be a number of seconds from 0 to {most:g}, got {raw!r}.")
    return seconds


async def job_events(service: TranscriptionService, job_id: str) -> AsyncIterator[bytes]:
    """A job's life as server-sent events: ``queued`` (its place, when it
    changes), ``progress`` (fraction, ETA, segments done, when they change),
    ``segment`` (each one as it is decoded), and last ``status``: the record
    ``GET /status`` gives once the job has ended (``error`` if it vanished)."""
    position: Any = None
    progress: Any = None
    try:
        async for snapshot in service.follow(job_id):
            record, out = snapshot.record, []
            if "queue_position" in record and record["queue_position"] != position:
                position = record["queue_position"]
                out.append(event({"job_id": job_id, "status": record["status"], "queue_position": position}, "queued"))
            # Those decoded since the last snapshot (the last window's may come with the job's end).
            for segment in snapshot.segments:
                out.append(event({k: segment.get(k) for k in ("id", "start", "end", "text")}, "segment"))
            if record["status"] in FINISHED_STATUSES:
                yield b"".join([*out, event(record, "status")])
                return
            now = (record["progress"], record.get("eta_seconds"), record.get("segments_done"))
            if record["status"] == "processing" and now != progress:
                progress = now
                data = {"job_id": job_id, "status": "processing", "progress": now[0], "eta_seconds": now[1]}
                out.append(event({**data, "segments_done": now[2]}, "progress"))
            # One write per snapshot: hundreds of streams on a job each send at every change.
            yield b"".join(out) or KEEPALIVE
    except ServiceError as exc:  # e.g. the job expired while followed
        yield event(exc.to_dict(), "error")


def routes(service: TranscriptionService) -> list[Route]:
    async def transcribe(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput(
                "Send the audio as multipart/form-data with the file in a field named 'file' (or its URL "
                "in 'audio_url'), e.g. curl -F file=@recording.wav URL/transcribe"
            )
        form = await read_form(request, service, SUBMISSION_FIELDS)
        values: dict[str, Any] = {name: form.fields.get(name) for name in SUBMISSION_FIELDS}
        values["filename"] = values["filename"] or form.filename
        if form.file is None:
            if values["audio_url"] is None:
                raise InvalidInput(
                    "No audio received: put the file in a multipart field named 'file', or its URL in 'audio_url'."
                )
            submission = Submission(**values, known_speakers=known_speakers(form.repeated))
            return JSONResponse(await service.submit_url(submission), status_code=202)
        try:
            if (values["audio_url"] or "").strip():
                raise InvalidInput("Send the file or its audio_url, not both.")
            submission = Submission(**values, known_speakers=known_speakers(form.repeated))
        except BaseException:
            await service.discard(form.file)
            raise
        record = await service.submit(form.file, submission)
        return JSONResponse(record, status_code=202)

    async def upload_once(request: Request) -> Response:
        """A one-time upload URL: the raw body (or a multipart 'file') becomes the job."""
        secret = request.path_params["secret"]
        expected = check_declared_length(request, service.max_upload_bytes)

        async def receive() -> tuple[StoredUpload, str | None]:
            await service.check_space(expected)
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await read_multipart(request, "file", service.new_sink, max_bytes=service.max_upload_bytes)
                if form.file is None:
                    raise InvalidInput("No file received: put the audio in a multipart field named 'file'.")
                return form.file, form.filename
            return await read_raw(request, service.new_sink()), None

        record = await service.upload_to_url(secret, receive)
        return JSONResponse(record, status_code=202)

    async def metrics(request: Request) -> Response:
        return Response(await service.metrics_text(), media_type=METRICS_CONTENT_TYPE)

    async def livez(request: Request) -> Response:
        # For an orchestrator's liveness probe: a process whose inference
        # thread is gone takes jobs it will never run, and must be restarted.
        if not service.alive:
            return JSONResponse({"status": "error", "worker": "stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec())

    async def status(request: Request) -> Response:
        fmt = request.query_params.get("format", "txt")
        wait = _wait_param(request, service.max_wait_seconds)
        if wait > 0:  # a long poll: one request instead of a polling loop
            return JSONResponse(await service.wait(request.path_params["job_id"], wait, fmt=fmt))
        return JSONResponse(await service.status(request.path_params["job_id"], fmt))

    async def download(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if (request.query_params.get("format") or "").strip().lower() == RECORDING_FORMAT:
            # A live session's kept audio (store=audio), streamed as storage gives it.
            return StreamingResponse(
                await service.recording(job_id),
                media_type="audio/wav",
                headers={"content-disposition": f'attachment; filename="{job_id}.wav"'},
            )
        fmt = check_format(request.query_params.get("format"))
        body = await service.transcript(job_id, fmt)
        headers = {}
        if fmt in ("srt", "vtt") or request.query_params.get("attachment"):
            headers["content-disposition"] = f'attachment; filename="{job_id}.{fmt}"'
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)

    async def events(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        await service.status(job_id)  # an unknown id is a 404 now, not an event
        return EventStream(job_events(service, job_id))

    async def cancel(request: Request) -> Response:
        return JSONResponse(await service.cancel(request.path_params["job_id"]))

    async def jobs(request: Request) -> Response:
        return JSONResponse(
            await service.list_jobs(
                request.query_params.get("status"),
                _int_param(request, "limit", 50),
                _int_param(request, "offset", 0),
            )
        )

    async def models(request: Request) -> Response:
        return JSONResponse(await service.models())

    async def health(request: Request) -> Response:
        return JSONResponse(await service.health())

    return [
        Route("/transcribe", transcribe, methods=["POST"]),
        Route("/status/{job_id}", status, methods=["GET"]),
        Route("/download/{job_id}", download, methods=["GET"]),
        Route("/jobs", jobs, methods=["GET"]),
        Route("/jobs/{job_id}", status, methods=["GET"]),
        Route("/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/jobs/{job_id}/events", events, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/upload/{secret}", upload_once, methods=["PUT", "POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.count_error(exc.code)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"No route {request.method} {request.url.path}. See the README for the API."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return JSONResponse(
        {"error": {"code": f"http_{exc.status_code}", "message": message}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def storage_error(request: Request, exc: Exception) -> Response:
    """A full disk (507) or a database that is away (503) under any route,
    in words; any other exception stays a 500."""
    fault = storage_fault(exc)
    if fault is None:
        raise exc
    return await service_error(request, fault)


exception_handlers = {
    ServiceError: service_error,
    HTTPException: http_error,
    OSError: storage_error,
    sqlite3.Error: storage_error,
}
