"""The shapes of the service's answers, typed so that FastMCP publishes them as
each MCP tool's ``outputSchema``.

FastMCP serializes a tool's result through its return annotation. A
``TypedDict`` drops keys it does not declare unless it allows extra ones, so
each one here does (``extra="allow"``, shown as ``additionalProperties: true``):
a key added to the service later reaches clients before it is declared here.
Keys the service leaves out on some paths are ``NotRequired``; keys it always
sends, possibly as null, are required and typed ``X | None``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal, NotRequired, TypeVar

from typing_extensions import TypedDict

from whisper_mcp.formats import FORMATS
from whisper_mcp.models.registry import model_label
from whisper_mcp.options import PRIORITY_NAMES, PriorityName, TranscribeOptions
from whisper_mcp.queue.jobs import Job, JobStatus
from whisper_mcp.server.egress import redact_url

_T = TypeVar("_T")


def _open(cls: type[_T]) -> type[_T]:
    """Allow keys beyond those declared in the schemas made from ``cls``:
    pydantic's own ``with_config(ConfigDict(extra="allow"))``, set through
    the attribute pydantic documents for TypedDicts, so that importing this
    module (every server start) does not import pydantic (3 MiB)."""
    cls.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]
    return cls


@_open
class CallbackState(TypedDict):
    url: str
    state: str
    attempts: int
    error: str | None


@_open
class JobRecord(TypedDict):
    """A transcription job: its state, and its transcript once completed."""

    job_id: str
    # queued, processing, completed, failed or cancelled; or waiting_for_upload
    # for an id create_upload_url issued whose URL is still unused (then only
    # job_id, status, progress, filename, created_at, expires_at and note). A
    # plain string in the schema, so a state added later does not make
    # clients reject the answer.
    status: str
    progress: float
    filename: str | None
    created_at: float
    # Every job has these; a job id still waiting for its upload has not.
    model: NotRequired[str]
    language: NotRequired[str | None]
    priority: NotRequired[PriorityName]
    options: NotRequired[dict[str, Any]]
    audio_seconds: NotRequired[float]
    started_at: NotRequired[float | None]
    finished_at: NotRequired[float | None]
    attempts: NotRequired[int]
    queue_position: NotRequired[int]
    eta_seconds: NotRequired[float | None]
    cancel_requested: NotRequired[bool]
    # While processing: the text decoded so far, in order, and its segment count.
    partial_transcript: NotRequired[str]
    segments_done: NotRequired[int]
    transcript: NotRequired[str]
    format: NotRequired[str]
    language_probability: NotRequired[float]
    # Completed jobs whose audio sounds like a language their English-only model cannot hear.
    warning: NotRequired[str]
    error: NotRequired[str | None]
    cached: NotRequired[bool]
    cached_from: NotRequired[str]
    download_url: NotRequired[str]
    resources: NotRequired[dict[str, str]]
    callback: NotRequired[CallbackState]
    # A job sent as a URL: where its audio is fetched from (user info and query values hidden).
    audio_url: NotRequired[str]
    expires_at: NotRequired[float]
    note: NotRequired[str]


@_open
class JobPage(TypedDict):
    jobs: list[JobRecord]
    total: int
    next_offset: int | None


@_open
class UploadUrl(TypedDict):
    upload_url: str
    job_id: str
    expires_at: float
    expires_in_seconds: int
    command: str
    note: str


@_open
class UploadStarted(TypedDict):
    upload_id: str
    max_chunk_bytes: int
    expires_at: float
    next: str


@_open
class ChunkReceived(TypedDict):
    upload_id: str
    received_bytes: int
    # Only when begin_upload was given the size.
    complete: NotRequired[bool]
    missing: NotRequired[list[list[int]]]


@_open
class ModelEntry(TypedDict):
    name: str
    source: str
    offline: bool
    loaded: bool
    memory_mb: NotRequired[float]
    pinned: NotRequired[bool]


@_open
class Models(TypedDict):
    default: str
    models: list[ModelEntry]
    # The speaker diarizer (diarize=true): name, offline, loaded, memory_mb when loaded.
    diarizer: NotRequired[dict[str, Any]]
    loads: int
    unloads: int


@_open
class RunningJob(TypedDict):
    job_id: str
    progress: float


@_open
class CompatFallback(TypedDict):
    """A hook into a library whose names were gone at start-up: what is lost, and what runs instead."""

    library: str
    version: str | None
    written_for: str
    hook: str
    missing: list[str]
    lost: str
    instead: str


@_open
class Health(TypedDict):
    status: Literal["ok", "degraded", "error"]
    # "running", "stopped" (the inference thread is gone: restart the process),
    # or why no job starts now ("waiting for free disk space").
    worker: str
    model_loaded: bool
    model: str
    model_error: str | None
    loaded_models: list[str]
    device: str
    engine: str
    compute_type: str
    encoder_compute_type: str
    vad_batching: bool
    queue_size: int
    realtime_sessions: int
    max_realtime_sessions: int
    processing: RunningJob | None
    processing_jobs: list[RunningJob]
    # Empty unless an installed library lacks a name one of whisper-mcp's hooks needs.
    compat: list[CompatFallback]


# Shown on their own (language), or the service's choice rather than the client's.
_NOT_CHOSEN = frozenset({"language", "identify_with", "reroute"})


def _chosen(options: TranscribeOptions) -> dict[str, Any]:
    """A job's options beyond the defaults (language is shown on its own);
    known speakers by name."""
    chosen = {k: v for k, v in asdict(options).items() if v is not None and v is not False and k not in _NOT_CHOSEN}
    if chosen.pop("known_speakers", None):
        chosen["known_speakers"] = [name for name, _sha in options.known_speakers]
    return chosen


def job_record(job: Job) -> JobRecord:
    """A job as every answer shows it (REST, MCP, the OpenAPI document's ``Job``)."""
    record: JobRecord = {
        "job_id": job.job_id,
        "status": job.status.value,
        "progress": round(job.progress, 4)
        if job.status is JobStatus.PROCESSING
        else float(job.status is JobStatus.COMPLETED),
        "filename": job.filename,
        "model": model_label(job.model),
        "language": job.detected_language or job.options.language,
        "priority": PRIORITY_NAMES[job.priority],
        # What was chosen beyond the defaults (language is shown above).
        "options": _chosen(job.options),
        "audio_seconds": job.duration,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
    }
    if job.cached_from is not None:
        record["cached"] = True
        record["cached_from"] = job.cached_from
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        record["error"] = job.error
    if job.status is JobStatus.COMPLETED:
        record["download_url"] = f"/download/{job.job_id}"
        record["resources"] = {fmt: f"transcript://{job.job_id}/{fmt}" for fmt in FORMATS}
    if job.audio_url is not None:
        record["audio_url"] = redact_url(job.audio_url)
    if job.callback_url is not None:
        record["callback"] = {
            "url": redact_url(job.callback_url),  # delivered to the real one
            "state": job.callback_state or "waiting for the job to end",
            "attempts": job.callback_attempts,
            "error": job.callback_error,
        }
    return record
