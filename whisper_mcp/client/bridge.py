"""A local MCP server over stdio for agents whose recordings sit on their own disk.

The agent's MCP client starts ``python -m whisper_mcp.client.bridge`` (or ``whisper-mcp
bridge``) as a subprocess. Its ``transcribe_wav(filename)`` takes a LOCAL path,
streams the file over HTTP to a running whisper-mcp service and returns a job id
at once; ``check_transcription_status(job_id)`` polls the service and, once the
job has completed, writes the transcript next to the other results:

    <output_dir>/<stem>.transcribing.txt   while the job is queued or running
    <output_dir>/<stem>.txt                the transcript, once completed

The bytes never pass through the conversation. A small map job_id -> original
file, ``<output_dir>/.whisper-mcp-jobs.json``, lets a restarted bridge finish
what an earlier one queued.

``whisper-mcp bridge ARGS`` hands ARGS to ``main``, which parses them itself so
that other commands need not import fastmcp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from pydantic import Field

from whisper_mcp.client import console
from whisper_mcp.client.console import PROG, TOKEN_ENV, URL_ENV
from whisper_mcp.client.http import DEFAULT_URL, FINISHED, ClientError, ServiceClient, write_text_atomic

DEFAULT_OUTPUT_DIR = "./transcriptions"
JOBS_FILE = ".whisper-mcp-jobs.json"
MAX_WAIT_SECONDS = 50.0
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 30.0

__all__ = ["build_bridge", "main"]

INSTRUCTIONS = """\
Transcribes speech recordings that are files on THIS machine, using a whisper-mcp
service that keeps the Whisper model loaded. Work is asynchronous:
1. transcribe_wav(filename="/path/to/recording.wav") uploads the file and returns a
   job_id at once; a <name>.transcribing.txt status file appears in the output folder.
2. check_transcription_status(job_id, wait_seconds=45) waits for the job; when status
   is "completed" it writes <name>.txt in the output folder and returns the transcript
   and transcript_file. Call it again while status is "queued" or "processing".
"""

T = TypeVar("T")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


def _safe_stem(name: str | None) -> str | None:
    """The stem of a file name's last component, or None when nothing usable is left
    (the name may come from the service, i.e. from whoever submitted the job)."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = Path(base).stem.strip()
    stem = "".join(c for c in stem if c.isprintable() and c not in '<>:"|?*')
    if not stem or stem.startswith(".") or stem in ("..", "."):
        return None
    return stem[:200]


class _JobMap:
    """job_id -> {"filename": original local path, "submitted_at": ...} in a JSON file.
    Writes are atomic; one lock serialises read-modify-write within this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, job_id: str) -> str | None:
        with self._lock:
            entry = self._read().get(job_id)
        if isinstance(entry, str):
            return entry
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
            return entry["filename"]
        return None

    def put(self, job_id: str, filename: str) -> None:
        with self._lock:
            data = self._read()
            data[job_id] = {"filename": filename, "submitted_at": time.time()}
            write_text_atomic(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def remove(self, job_id: str) -> None:
        with self._lock:
            data = self._read()
            if data.pop(job_id, None) is not None:
                write_text_atomic(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def build_bridge(url: str, token: str | None, output_dir: Path) -> FastMCP:
    """The stdio MCP server: ``transcribe_wav`` and ``check_transcription_status``
    for local files, talking to the service at ``url``."""
    url = url.rstrip("/")
    output_dir = Path(output_dir).expanduser().absolute()
    jobs = _JobMap(output_dir / JOBS_FILE)
    mcp = FastMCP("whisper-mcp-bridge", instructions=INSTRUCTIONS)

    def tool_error(exc: ClientError) -> ToolError:
        if exc.unreachable:
            return ToolError(
                f"Could not reach the transcription service at {url}: {exc.message}. "
                f"Is it running? Start it with `whisper-mcp serve`, or point the bridge at it "
                f"with --url or {URL_ENV}."
            )
        if exc.status_code in (401, 403):
            hint = "" if token else f" (the bridge has no token: set --token or {TOKEN_ENV})"
            return ToolError(f"The transcription service refused the request: {exc.message}{hint}")
        return ToolError(exc.message)

    async def service(fn: Callable[[ServiceClient], T]) -> T:
        """Run a blocking client call in a worker thread, so the stdio loop stays free."""

        def run() -> T:
            with ServiceClient(url, token=token, timeout=HTTP_TIMEOUT) as client:
                return fn(client)

        try:
            return await anyio.to_thread.run_sync(run)
        except ClientError as exc:
            raise tool_error(exc) from None

    async def in_thread(fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn)

    def status_file_for(stem: str) -> Path:
        return output_dir / f"{stem}.transcribing.txt"

    def stem_for(job_id: str, record: dict[str, Any] | None, original: str | None) -> str:
        return _safe_stem(original) or _safe_stem((record or {}).get("filename")) or _safe_stem(job_id) or "transcript"

    @mcp.tool(annotations={"readOnlyHint": False, "openWorldHint": False})
    async def transcribe_wav(
        filename: Annotated[
            str,
            Field(
                description="Path of the recording on this machine (WAV, MP3, FLAC, Ogg/Opus or M4A), "
                "absolute or relative to the bridge's working folder. It is streamed to the service; "
                "its bytes never pass through this conversation."
            ),
        ],
        model: Annotated[
            str | None,
            Field(description="Whisper model, e.g. tiny.en or base. Leave out for the service's default."),
        ] = None,
        language: Annotated[
            str | None,
            Field(
                description="Spoken language: a code such as en, a name such as german, or auto. Leave out to let the service decide."
            ),
        ] = None,
        job_id: Annotated[
            str | None,
            Field(
                description="Your own job id (letters, digits, '.', '_', '-'; up to 128). Leave out for a generated one."
            ),
        ] = None,
        priority: Annotated[
            Literal["urgent", "normal", "low"] | None,
            Field(description="Queue priority: urgent jobs run before waiting normal ones. Default normal."),
        ] = None,
        diarize: Annotated[
            bool,
            Field(description="Label who spoke when: each part of the transcript starts with its speaker."),
        ] = False,
        num_speakers: Annotated[
            int | None, Field(ge=1, le=15, description="With diarize: how many speakers, if known.")
        ] = None,
    ) -> dict[str, Any]:
        """Queue a recording that is a file on this machine for transcription and return at once.

        Uploads the file to the whisper-mcp service, writes <name>.transcribing.txt in the
        output folder, and returns the job_id. Then call
        check_transcription_status(job_id, wait_seconds=45) until status is "completed":
        it writes <name>.txt there and returns the transcript.
        """
        path = Path(filename).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.exists():
            raise ToolError(
                f"No such file: {filename} (looked for {path}). Give the path of a recording on this machine."
            )
        if not path.is_file():
            raise ToolError(f"Not a regular file: {filename} ({path}). Give the path of a recording, not a folder.")
        if not os.access(path, os.R_OK):
            raise ToolError(f"Cannot read {filename} ({path}): permission denied.")
        try:
            await in_thread(lambda: output_dir.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise ToolError(f"Cannot create the output folder {output_dir}: {exc.strerror or exc}") from None

        options: dict[str, Any] = {"model": model, "language": language, "job_id": job_id, "priority": priority}
        if diarize:
            options.update(diarize=True, num_speakers=num_speakers)
        elif num_speakers is not None:
            raise ToolError("num_speakers applies with diarize=true; set diarize or leave num_speakers out.")
        record = await service(lambda client: client.submit(path, **options))
        new_id = str(record["job_id"])
        status = str(record.get("status", "queued"))
        stem = _safe_stem(path.name) or _safe_stem(new_id) or "transcript"
        status_file = status_file_for(stem)
        position = record.get("queue_position")
        note = (
            f"QUEUED - uploaded to transcription service as job {new_id} at {_now()}\n"
            f"service: {url}\n"
            f"source: {path}\n"
            + (f"queue position: {position}\n" if position else "")
            + f"next: check_transcription_status(job_id={new_id!r})\n"
        )

        def record_job() -> None:
            jobs.put(new_id, str(path))
            write_text_atomic(status_file, note)

        try:
            await in_thread(record_job)
        except OSError as exc:
            raise ToolError(
                f"The job {new_id} was queued, but writing to {output_dir} failed: {exc.strerror or exc}"
            ) from None

        answer: dict[str, Any] = {
            "success": True,
            "status": status,
            "job_id": new_id,
            "service_url": url,
            "status_file": str(status_file),
            "message": f"{path.name} was uploaded to the transcription service as job {new_id}. "
            f"To get the transcript, use check_transcription_status(job_id={new_id!r}, wait_seconds=45); "
            "call it again while status is queued or processing.",
        }
        if position:
            answer["queue_position"] = position
        if record.get("cached"):
            answer["cached"] = True
        return answer

    @mcp.tool(annotations={"readOnlyHint": False, "openWorldHint": False})
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
        """Check a transcription job; once it has completed, save and return the transcript.

        status is one of queued, processing, completed, failed, cancelled. When completed,
        the transcript is written to <name>.txt in the output folder (transcript_file),
        <name>.transcribing.txt is removed, and "transcript" holds the text. When failed
        or cancelled, "error" says why. If the job is still queued or processing when the
        wait ends, call this again.
        """
        wait = min(max(float(wait_seconds or 0), 0.0), MAX_WAIT_SECONDS)
        deadline = time.monotonic() + wait
        last: tuple[str, float] | None = None
        reached = False
        record: dict[str, Any]
        while True:
            try:
                record = await anyio.to_thread.run_sync(lambda: _status(url, token, job_id))
            except ClientError as exc:
                # A service restarting mid-wait comes back with its queue: once it has
                # answered in this call, keep trying until the wait is over.
                if not (reached and exc.unreachable and time.monotonic() + POLL_SECONDS < deadline):
                    raise tool_error(exc) from None
                await anyio.sleep(POLL_SECONDS)
                continue
            reached = True
            status = str(record.get("status", "unknown"))
            progress = 1.0 if status == "completed" else float(record.get("progress") or 0.0)
            if ctx is not None and (status, progress) != last:
                try:
                    await ctx.report_progress(progress, 1.0, status)
                except Exception:  # noqa: BLE001 - progress is best effort
                    pass
            last = (status, progress)
            if status in FINISHED or time.monotonic() + POLL_SECONDS > deadline:
                break
            await anyio.sleep(POLL_SECONDS)

        original = await in_thread(lambda: jobs.get(job_id))
        stem = stem_for(job_id, record, original)
        status_file = status_file_for(stem)

        if status == "completed":
            text = await service(lambda client: client.download(job_id, "txt"))
            target = output_dir / f"{stem}.txt"
            if original and target.absolute() == Path(original).absolute():
                target = output_dir / f"{stem}.transcript.txt"

            def save() -> None:
                write_text_atomic(target, text)
                status_file.unlink(missing_ok=True)
                jobs.remove(job_id)

            try:
                await in_thread(save)
            except OSError as exc:
                raise ToolError(f"Job {job_id} completed, but writing {target} failed: {exc.strerror or exc}") from None
            answer: dict[str, Any] = {
                "success": True,
                "status": "completed",
                "job_id": job_id,
                "transcript_file": str(target),
                "transcript": text,
            }
            for key in ("language", "audio_seconds", "cached"):
                if record.get(key) is not None:
                    answer[key] = record[key]
            return answer

        if status in ("failed", "cancelled"):
            error = str(record.get("error") or "no reason given")
            note = f"{status.upper()} - job {job_id} {status} at {_now()}: {error}\nservice: {url}\n"

            def mark() -> None:
                write_text_atomic(status_file, note)
                jobs.remove(job_id)

            try:
                await in_thread(mark)
            except OSError:
                pass
            return {
                "success": False,
                "status": status,
                "job_id": job_id,
                "error": error,
                "status_file": str(status_file),
                "message": f"Transcription job {job_id} {status}: {error}",
            }

        answer = {
            "success": True,
            "status": status,
            "job_id": job_id,
            "progress": progress,
            "message": "Transcription still in progress; call check_transcription_status again"
            + (" with wait_seconds=45." if wait < MAX_WAIT_SECONDS else "."),
        }
        for key in ("queue_position", "eta_seconds"):
            if record.get(key) is not None:
                answer[key] = record[key]
        if status_file.exists():
            detail = (
                f"{progress * 100:.0f}%"
                if status == "processing"
                else (f"position {record['queue_position']}" if record.get("queue_position") else "waiting")
            )
            note = f"{status.upper()} - job {job_id}, {detail}, checked at {_now()}\nservice: {url}\n"
            try:
                await in_thread(lambda: write_text_atomic(status_file, note))
            except OSError:
                pass
            answer["status_file"] = str(status_file)
        return answer

    return mcp


def _status(url: str, token: str | None, job_id: str) -> dict[str, Any]:
    with ServiceClient(url, token=token, timeout=HTTP_TIMEOUT) as client:
        return client.status(job_id)


# -- command line --------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"service base URL (env {URL_ENV}, default {DEFAULT_URL})")
    parser.add_argument("--token", help=f"bearer token for the service (env {TOKEN_ENV})")
    parser.add_argument(
        "--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR",
        help=f"folder for transcripts and .transcribing.txt status files (created if missing), default {DEFAULT_OUTPUT_DIR}",
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    mcp = build_bridge(console.url(args), console.token(args), Path(args.output_dir))
    # stdout carries the MCP protocol: nothing else may be printed there.
    mcp.run(transport="stdio", show_banner=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} bridge",
        description="Local MCP server over stdio for files on this disk; talks to a running whisper-mcp service.",
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
