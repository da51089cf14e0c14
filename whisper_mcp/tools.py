"""MCP tools: the same service as the REST routes, described for agents."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from anyio import to_thread
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from pydantic import Field

from .errors import ServiceError
from .service import TranscriptionService

INSTRUCTIONS = """\
whisper-mcp turns speech recordings into text with OpenAI Whisper, using a model
the server keeps loaded. Work is asynchronous:
1. transcribe_wav(audio_base64=...) queues a recording and returns a job_id at once.
2. check_transcription_status(job_id, wait_seconds=45) waits for the job and returns
   the transcript when status is "completed" (or the reason when "failed").
   Call it again while status is "queued" or "processing".
health() tells whether the model is loaded and how long the queue is.
"""


def build_mcp(service: TranscriptionService) -> FastMCP:
    mcp = FastMCP("whisper-mcp", instructions=INSTRUCTIONS)

    @mcp.tool(annotations={"readOnlyHint": False, "openWorldHint": False})
    async def transcribe_wav(
        audio_base64: Annotated[
            str,
            Field(
                description="The whole audio file (WAV, MP3, FLAC, Ogg/Opus or M4A), base64-encoded. "
                "Suits short clips only: every byte passes through this call."
            ),
        ],
        filename: Annotated[
            str | None, Field(description="Original file name, kept with the job for your reference.")
        ] = None,
        job_id: Annotated[
            str | None,
            Field(
                description="Your own id for the job (letters, digits, '.', '_', '-'; up to 128). "
                "Leave it out to get a generated one. Re-sending the same audio with the same id "
                "returns the existing job instead of a second one."
            ),
        ] = None,
        model: Annotated[
            str | None,
            Field(description="Whisper model name, e.g. 'tiny.en' or 'base'. Leave it out for the server's default."),
        ] = None,
        language: Annotated[
            str | None,
            Field(description="Spoken language as a code ('en', 'de') or name; leave it out to detect it."),
        ] = None,
        callback_url: Annotated[
            str | None,
            Field(description="http(s) URL that receives a JSON POST when the job ends."),
        ] = None,
    ) -> dict[str, Any]:
        """Queue a recording for transcription and return its job_id immediately.

        This does not wait for the transcript: call check_transcription_status with
        the returned job_id (and wait_seconds up to 50) to get it.
        """
        try:
            data = base64.b64decode(audio_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ToolError(
                "audio_base64 is not valid base64. Encode the raw file bytes, e.g. `base64 -w0 file.wav`."
            ) from None
        try:
            upload = await to_thread.run_sync(service.files.receive_bytes, data)
            return await service.submit(
                upload,
                filename=filename,
                job_id=job_id,
                model=model,
                language=language,
                callback_url=callback_url,
            )
        except ServiceError as exc:
            raise ToolError(exc.message) from None

    @mcp.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    async def check_transcription_status(
        job_id: Annotated[str, Field(description="The job_id that transcribe_wav returned.")],
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                description="Wait up to this many seconds (at most 50) for the job to finish before "
                "answering. 0 answers at once. Use about 45 to avoid repeated polling.",
            ),
        ] = 0,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Return a transcription job's status; with the transcript once it has completed.

        status is one of queued, processing, completed, failed. progress is the
        fraction of the audio transcribed (0 to 1). When completed, "transcript"
        holds the text; when failed, "error" says why. If the job is still queued
        or processing when the wait ends, call this again.
        """

        async def report(record: dict[str, Any]) -> None:
            if ctx is not None:
                await ctx.report_progress(float(record.get("progress", 0.0)), 1.0, record["status"])

        try:
            return await service.wait(job_id, wait_seconds, report)
        except ServiceError as exc:
            raise ToolError(exc.message) from None

    @mcp.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    async def health() -> dict[str, Any]:
        """Whether the service is ready: model loaded, which model, queue length, and the job in progress."""
        return await service.health()

    return mcp
