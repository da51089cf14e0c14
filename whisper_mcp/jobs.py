"""Job records and the interface of the store that keeps them.

The store is the single source of truth for the queue: a job that a client
was told is queued exists in the store before the answer is sent, and the
worker takes its next job from the store, never from memory.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


@dataclass(frozen=True)
class JobRequest:
    """What a client asked for; everything the worker needs to run the job."""

    job_id: str
    # Server-made id that names the job's files; never derived from client input.
    key: str
    filename: str | None
    model: str
    language: str | None
    callback_url: str | None
    audio_sha256: str
    audio_bytes: int
    duration: float


@dataclass(frozen=True)
class Job:
    job_id: str
    key: str
    status: JobStatus
    filename: str | None
    model: str
    language: str | None
    callback_url: str | None
    audio_sha256: str
    audio_bytes: int
    duration: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    detected_language: str | None
    # Arrival order; the worker runs queued jobs in this order.
    seq: int
    # Delivery of the completion callback: None (no callback_url), "pending",
    # "delivered" or "failed" (gave up after retries).
    callback_state: str | None = None
    callback_attempts: int = 0
    callback_error: str | None = None


class JobStore(Protocol):
    """Durable job storage. SQLite here; a shared database could serve
    several replicas behind the same methods."""

    def add(self, request: JobRequest, now: float) -> Job:
        """Insert a queued job; raises ``DuplicateJob`` if the id is taken."""

    def get(self, job_id: str) -> Job | None: ...

    def claim_next(self, now: float) -> Job | None:
        """Atomically move the oldest queued job to processing and return it."""

    def complete(self, job_id: str, now: float, detected_language: str | None) -> None: ...

    def fail(self, job_id: str, now: float, error: str) -> None: ...

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

    def close(self) -> None: ...


class DuplicateJob(Exception):
    def __init__(self, existing: Job) -> None:
        super().__init__(existing.job_id)
        self.existing = existing
