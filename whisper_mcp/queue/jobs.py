"""Job records and the interface of the store that keeps them.

The store is the single source of truth for the queue: a job that a client
was told is queued exists in the store before the answer is sent, and the
worker takes its next job from the store, never from memory.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Protocol

from whisper_mcp.options import TranscribeOptions


# A job id a client may choose: also safe as a URL path segment.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JOB_ID = re.compile(JOB_ID_PATTERN)


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


JOB_STATUSES = tuple(status.value for status in JobStatus)
FINISHED_STATUSES = frozenset(status.value for status in JobStatus if status.finished)


@dataclass(frozen=True)
class JobRequest:
    """What a client asked for; everything the worker needs to run the job."""

    job_id: str
    # Server-made id that names the job's files; never derived from client input.
    key: str
    filename: str | None
    model: str
    callback_url: str | None
    audio_sha256: str
    audio_bytes: int
    duration: float
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    priority: int = 1  # options.PRIORITIES: 0 urgent, 1 normal, 2 low
    # Set when the transcript is reused from an earlier job with the same audio,
    # model, options and engine: the job is stored as completed at once.
    cached_from: str | None = None
    # The engine and compute type that serve it: part of the cache key, since
    # they give slightly different transcripts.
    engine: str = ""


@dataclass(frozen=True)
class Job:
    job_id: str
    key: str
    status: JobStatus
    filename: str | None
    model: str
    callback_url: str | None
    audio_sha256: str
    audio_bytes: int
    duration: float
    options: TranscribeOptions
    priority: int
    cached_from: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    detected_language: str | None
    # Arrival order; within a priority the worker runs queued jobs in this order.
    seq: int
    # Delivery of the completion callback: None (no callback_url), "pending",
    # "delivered" or "failed" (gave up after retries).
    callback_state: str | None = None
    callback_attempts: int = 0
    callback_error: str | None = None
    engine: str = ""


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    total: int
    queue_positions: dict[str, int] = field(default_factory=dict)  # job_id -> 1 for next to run


class JobStore(Protocol):
    """Durable job storage. SQLite here; a shared database could serve
    several replicas behind the same methods."""

    def add(self, request: JobRequest, now: float) -> Job:
        """Insert a queued job (completed, if ``cached_from``); raises ``DuplicateJob``
        if the id is taken."""

    def get(self, job_id: str) -> Job | None: ...

    def find_completed(self, audio_sha256: str, model: str, options: TranscribeOptions, engine: str) -> Job | None:
        """The newest completed job for the same audio, model, options and engine."""

    def claim_next(self, now: float) -> Job | None:
        """Atomically move the next queued job (priority, then arrival) to processing."""

    def queued(self, limit: int) -> list[Job]:
        """The next ``limit`` queued jobs, in the order they will run."""

    def claim(self, job_id: str, now: float) -> Job | None:
        """Atomically move this queued job to processing; None if it is no longer queued."""

    def complete(self, job_id: str, now: float, detected_language: str | None) -> None: ...

    def fail(self, job_id: str, now: float, error: str) -> None: ...

    def cancel(self, job_id: str, now: float, *, running: bool) -> bool:
        """Cancel a queued job (``running=False``) or mark a processing one cancelled
        (``running=True``); False if the job was no longer in that state."""

    def list(self, *, status: JobStatus | None, limit: int, offset: int) -> JobPage: ...

    def due_callbacks(self, now: float) -> list[Job]:
        """Ended jobs whose callback is pending and due for (another) attempt."""

    def record_callback(
        self, job_id: str, *, delivered: bool, gave_up: bool, next_attempt_at: float | None, error: str | None
    ) -> None: ...

    def next_callback_at(self) -> float | None:
        """When the earliest pending callback is due, if any."""

    def recover_interrupted(self) -> list[Job]:
        """Jobs left ``processing`` by a process that died; called once at start-up
        before the worker runs. Returns them, still marked processing."""

    def requeue(self, job_id: str) -> None: ...

    def active_keys(self) -> set[str]:
        """File keys of queued and processing jobs: the audio that must be kept."""

    def queue_position(self, job: Job) -> int:
        """1 for the next job to run."""

    def count(self, status: JobStatus) -> int: ...

    def expire_finished(self, before: float) -> list[str]:
        """Delete jobs that ended before ``before`` (callbacks delivered); their file keys."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class UploadRecord:
    """A chunked upload in progress, or a one-time upload URL not yet used."""

    upload_id: str
    kind: str  # "chunked" | "url"
    secret_hash: str | None  # url: sha256 of the URL's secret; the secret itself is never stored
    filename: str | None
    size: int | None  # declared total size, if given
    sha256: str | None  # declared checksum, verified before queueing
    submission: str | None  # url: the job's options, as JSON
    ranges: list[tuple[int, int]]  # chunked: byte ranges received, merged
    state: str  # "open" | "used"
    created_at: float
    expires_at: float


class DuplicateJob(Exception):
    def __init__(self, existing: Job) -> None:
        super().__init__(existing.job_id)
        self.existing = existing
