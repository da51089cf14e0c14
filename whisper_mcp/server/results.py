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

from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

_OPEN = ConfigDict(extra="allow")

Priority = Literal["urgent", "normal", "low"]


@with_config(_OPEN)
class CallbackState(TypedDict):
    url: str
    state: str
    attempts: int
    error: str | None


@with_config(_OPEN)
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
    priority: NotRequired[Priority]
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
    error: NotRequired[str | None]
    cached: NotRequired[bool]
    cached_from: NotRequired[str]
    download_url: NotRequired[str]
    resources: NotRequired[dict[str, str]]
    callback: NotRequired[CallbackState]
    expires_at: NotRequired[float]
    note: NotRequired[str]


@with_config(_OPEN)
class JobPage(TypedDict):
    jobs: list[JobRecord]
    total: int
    next_offset: int | None


@with_config(_OPEN)
class UploadUrl(TypedDict):
    upload_url: str
    job_id: str
    expires_at: float
    expires_in_seconds: int
    command: str
    note: str


@with_config(_OPEN)
class UploadStarted(TypedDict):
    upload_id: str
    max_chunk_bytes: int
    expires_at: float
    next: str


@with_config(_OPEN)
class ChunkReceived(TypedDict):
    upload_id: str
    received_bytes: int
    # Only when begin_upload was given the size.
    complete: NotRequired[bool]
    missing: NotRequired[list[list[int]]]


@with_config(_OPEN)
class ModelEntry(TypedDict):
    name: str
    source: str
    offline: bool
    loaded: bool
    memory_mb: NotRequired[float]
    pinned: NotRequired[bool]


@with_config(_OPEN)
class Models(TypedDict):
    default: str
    models: list[ModelEntry]
    # The speaker diarizer (diarize=true): name, offline, loaded, memory_mb when loaded.
    diarizer: NotRequired[dict[str, Any]]
    loads: int
    unloads: int


@with_config(_OPEN)
class RunningJob(TypedDict):
    job_id: str
    progress: float


@with_config(_OPEN)
class CompatFallback(TypedDict):
    """A hook into a library whose names were gone at start-up: what is lost, and what runs instead."""

    library: str
    version: str | None
    written_for: str
    hook: str
    missing: list[str]
    lost: str
    instead: str


@with_config(_OPEN)
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
    processing: RunningJob | None
    processing_jobs: list[RunningJob]
    # Empty unless an installed library lacks a name one of whisper-mcp's hooks needs.
    compat: list[CompatFallback]
