"""Plain HTTP routes for callers that do not speak MCP (curl, scripts)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import InvalidInput, ServiceError
from .formats import MEDIA_TYPES
from .service import SUBMISSION_FIELDS, Submission, TranscriptionService, check_format


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
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("No file received: put the audio in a multipart field named 'file'.")
            values: dict[str, Any] = {}
            for name in SUBMISSION_FIELDS:
                value = form.get(name)
                if isinstance(value, UploadFile):
                    raise InvalidInput(f"Field {name!r} must be a plain value, not a file.")
                values[name] = value
            values["filename"] = values["filename"] or upload.filename
            stored = await to_thread.run_sync(service.files.receive, upload.file)
        record = await service.submit(stored, Submission(**values))
        return JSONResponse(record, status_code=202)

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
    ]


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
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
