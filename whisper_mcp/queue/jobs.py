"""Job records: what a client asked for, and a job as the store keeps it.

The store is the single source of truth for the queue: a job that a client
was told is queued exists in the store before the answer is sent, and the
worker takes its next job from the store, never from memory.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from whisper_mcp.options import TranscribeOptions

# A job id a client may choose: also safe as a URL path segment.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JOB_ID = re.compile(JOB_ID_PATTERN)


class JobStatus(enum.StrEnum):
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
    # Where the job's run fetches its audio, as the client gave it (a job sent
    # as a URL); the audio facts above stay empty until then.
    audio_url: str | None = None


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
    # While processing: the fraction done, whether a cancel was asked, and the
    # claim (which replica holds it, until when by the database's clock).
    progress: float = 0.0
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    audio_url: str | None = None

    @property
    def awaits_audio(self) -> bool:
        """A job sent as a URL whose audio its run has not fetched yet."""
        return self.audio_url is not None and not self.audio_sha256

    def eta_seconds(self, now: float) -> float | None:
        """Seconds left, once a first window is done; decoding speed is roughly even."""
        if self.status is not JobStatus.PROCESSING or self.progress <= 0.0 or self.started_at is None:
            return None
        elapsed = max(0.0, now - self.started_at)
        return max(0.0, elapsed / self.progress - elapsed)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    total: int
    queue_positions: dict[str, int] = field(default_factory=dict)  # job_id -> 1 for next to run


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
