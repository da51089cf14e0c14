"""Plain HTTP routes for callers that do not speak MCP (curl, scripts)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from whisper_mcp.errors import InvalidInput, ServiceError
from whisper_mcp.formats import MEDIA_TYPES
from whisper_mcp.queue.files import StoredUpload
from whisper_mcp.server.http.bodies import check_declared_length, read_multipart, read_raw
from whisper_mcp.server.http.openapi import openapi_spec
from whisper_mcp.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from whisper_mcp.server.service import SUBMISSION_FIELDS, Submission, TranscriptionService, check_format


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {raw!r}.") from None


def routes(service: TranscriptionService) -> list[Route]:
    async def transcribe(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput(
                "Send the audio as multipart/form-data with the file in a field named 'file', "
                "e.g. curl -F file=@recording.wav URL/transcribe"
            )
        expected = check_declared_length(request, service.max_upload_bytes)
        await service.check_space(expected)
        form = await read_multipart(
            request, "file", service.new_sink, SUBMISSION_FIELDS, max_bytes=service.max_upload_bytes
        )
        if form.file is None:
            raise InvalidInput("No file received: put the audio in a multipart field named 'file'.")
        values = {name: form.fields.get(name) for name in SUBMISSION_FIELDS}
        values["filename"] = values["filename"] or form.filename
        record = await service.submit(form.file, Submission(**values))
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
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec())

    async def status(request: Request) -> Response:
        fmt = request.query_params.get("format", "txt")
        return JSONResponse(await service.status(request.path_params["job_id"], fmt))

    async def download(request: Request) -> Response:
        fmt = check_format(request.query_params.get("format"))
        job_id = request.path_params["job_id"]
        body = await service.transcript(job_id, fmt)
        headers = {}
        if fmt in ("srt", "vtt") or request.query_params.get("attachment"):
            headers["content-disposition"] = f'attachment; filename="{job_id}.{fmt}"'
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)

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
        service.metrics.errors.labels(exc.code).inc()
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


exception_handlers = {ServiceError: service_error, HTTPException: http_error}
