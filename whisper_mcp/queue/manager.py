"""The job queue: the only code that changes a job's state.

Everything that moves a job (enqueue, claim, progress, complete, fail,
cancel, recovery, expiry, callback delivery) is a method here, so one file
tells what can happen to a job and in which order. The worker, the service,
the callback sender and the transports ask; they never write job rows or job
files themselves. (The model is procrastinate's ``JobManager``.)

Durable state lives in the store (SQL in ``sqlite.py``) and the files
(``files.py``); what only a running process knows (progress, a cancel asked
of a running job) is held here, in memory. Every method blocks (SQLite, file
I/O): call them from worker threads, never on the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from whisper_mcp.queue.files import FileStore, StoredUpload
from whisper_mcp.queue.jobs import DuplicateJob, Job, JobPage, JobRequest, JobStatus, JobStore

# A job that was running when the process died this many times fails instead
# of running again: audio that kills the process must not stop the queue.
MAX_ATTEMPTS = 3


class JobCancelled(Exception):
    """Raised from a progress report to stop decoding at a window boundary."""


@dataclass
class Running:
    """What the process knows of a job it is transcribing now."""

    job_id: str
    started: float
    progress: float = 0.0
    cancel_requested: bool = False

    def eta_seconds(self, now: float) -> float | None:
        # Measurable once a first window is done; decoding speed is roughly even.
        if self.progress <= 0.0:
            return None
        elapsed = now - self.started
        return max(0.0, elapsed / self.progress - elapsed)


class JobQueue:
    def __init__(self, store: JobStore, files: FileStore, *, delete_audio: bool = True) -> None:
        self._store = store
        self.files = files
        self._delete_audio = delete_audio
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        # Called (job id) after every change, from whichever thread made it.
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _changed(self, job_id: str) -> None:
        for listener in self._listeners:
            listener(job_id)

    def close(self) -> None:
        self._store.close()

    # -- enqueue ----------------------------------------------------------

    def enqueue(self, upload: StoredUpload, request: JobRequest, *, use_cache: bool = True) -> Job:
        """Store a job for ``upload`` (consumed on success). A transcript already
        made from the same audio, model, options and engine is reused: the job
        is stored completed. Raises ``DuplicateJob`` if the id is taken."""
        earlier = (
            self._store.find_completed(request.audio_sha256, request.model, request.options, request.engine)
            if use_cache
            else None
        )
        result = self.files.read_result(earlier.key) if earlier is not None else None
        if earlier is not None and result is not None:
            self.files.write_result(request.key, result)
            try:
                job = self._store.add(replace(request, cached_from=earlier.job_id), time.time())
            except BaseException:
                self.files.discard(self.files.result_path(request.key))
                raise
        else:
            # Audio lands in place first: a queued job always has its file.
            audio = self.files.accept(upload, request.key)
            try:
                job = self._store.add(request, time.time())
            except BaseException:
                self.files.discard(audio)
                raise
        self._changed(job.job_id)
        return job

    # -- claim ------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """The next queued job (priority, then arrival), now processing."""
        job = self._store.claim_next(time.time())
        if job is not None:
            self._start([job])
        return job

    def claim_batch(self, leader: Job, size: int, fits: Callable[[Job], bool]) -> list[Job]:
        """Claim up to ``size - 1`` queued jobs right behind ``leader`` that
        ``fits`` (same forward pass), stopping at the first that does not:
        a batch never runs a job ahead of one queued before it."""
        mates: list[Job] = []
        for job in self._store.queued(size - 1) if size > 1 else []:
            if job.attempts > 0 or not fits(job):
                break
            # Started with the leader: same forward pass, same start time.
            claimed = self._store.claim(job.job_id, leader.started_at or time.time())
            if claimed is not None:  # else cancelled since the look
                mates.append(claimed)
        self._start(mates)
        return mates

    def _start(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._running[job.job_id] = Running(job.job_id, job.started_at or time.time())
        for job in jobs:
            self._changed(job.job_id)

    # -- progress and the end of a run -----------------------------------

    def progress(self, job_id: str, fraction: float) -> None:
        """Record how far a running job has got; raises ``JobCancelled`` if a
        cancel was asked, so decoding stops at this window."""
        with self._lock:
            running = self._running.get(job_id)
            if running is not None:
                running.progress = fraction
                if running.cancel_requested:
                    raise JobCancelled(job_id)
        self._changed(job_id)

    def running(self) -> tuple[Running, ...]:
        """Copies of the jobs this process is transcribing now."""
        with self._lock:
            return tuple(replace(r) for r in self._running.values())

    def running_job(self, job_id: str) -> Running | None:
        with self._lock:
            running = self._running.get(job_id)
            return None if running is None else replace(running)

    def complete(self, job: Job, result: dict[str, object], language: str | None) -> str:
        """End a run: its transcript, or ``cancelled`` if a cancel came during
        the last window. Returns the status the job ended with."""
        if self._cancel_requested(job.job_id):
            return self._end_cancelled(job)
        self.files.write_result(job.key, result)
        self._store.complete(job.job_id, time.time(), language)
        self._end(job)
        return JobStatus.COMPLETED.value

    def fail(self, job: Job, error: str) -> None:
        try:
            self._store.fail(job.job_id, time.time(), error)
        finally:
            self._end(job)

    def cancelled(self, job: Job) -> None:
        """A run stopped by ``JobCancelled``."""
        self._end_cancelled(job)

    def _end_cancelled(self, job: Job) -> str:
        try:
            self._store.cancel(job.job_id, time.time(), running=True)
        finally:
            self._end(job)
        return JobStatus.CANCELLED.value

    def _end(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.job_id, None)
        if self._delete_audio:
            self.files.discard(self.files.audio_path(job.key))
        self._changed(job.job_id)

    def _cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            running = self._running.get(job_id)
            return running is not None and running.cancel_requested

    # -- cancel -----------------------------------------------------------

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job at once (``"cancelled"``), or ask a running one
        to stop at its next window (``"requested"``); None if it had ended."""
        job = self._store.get(job_id)
        if job is not None and job.status is JobStatus.QUEUED:
            if self._store.cancel(job_id, time.time(), running=False):
                self.files.discard(self.files.audio_path(job.key))
                self._changed(job_id)
                return JobStatus.CANCELLED.value
        with self._lock:  # queued a moment ago, started since
            running = self._running.get(job_id)
            if running is not None:
                running.cancel_requested = True
                return "requested"
        return None

    # -- recovery and expiry ---------------------------------------------

    def recover(self) -> list[str]:
        """Start-up, before the worker runs: settle jobs that a dead process
        left processing. A job whose transcript was fully written completes
        now; any other is queued again and keeps its place, unless it has
        been started ``MAX_ATTEMPTS`` times. Returns the ids that run again."""
        again = []
        for job in self._store.recover_interrupted():
            if self.files.has_result(job.key):  # died after writing the transcript: it is done
                result = self.files.read_result(job.key) or {}
                self._store.complete(job.job_id, time.time(), result.get("language"))  # type: ignore[arg-type]
            elif job.attempts >= MAX_ATTEMPTS:
                self._store.fail(
                    job.job_id, time.time(), f"The server stopped {job.attempts} times while running this job; giving up."
                )
            else:
                self._store.requeue(job.job_id)
                again.append(job.job_id)
        if self._delete_audio:
            # Audio of ended jobs, or of uploads that died before their job was stored.
            live = self._store.active_keys()
            for path in self.files.audio_dir.iterdir():
                if path.name not in live:
                    self.files.discard(path)
        self.files.clear_incoming()
        return again

    def expire(self, before: float) -> int:
        """Delete jobs that ended before ``before`` (callbacks settled), with their files."""
        keys = self._store.expire_finished(before)
        for key in keys:
            self.files.discard(self.files.result_path(key))
            self.files.discard(self.files.audio_path(key))
        return len(keys)

    # -- callbacks --------------------------------------------------------

    def due_callbacks(self) -> list[Job]:
        return self._store.due_callbacks(time.time())

    def next_callback_at(self) -> float | None:
        return self._store.next_callback_at()

    def record_callback(
        self, job_id: str, *, delivered: bool, gave_up: bool, next_attempt_at: float | None, error: str | None
    ) -> None:
        self._store.record_callback(
            job_id, delivered=delivered, gave_up=gave_up, next_attempt_at=next_attempt_at, error=error
        )

    # -- reading ----------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._store.get(job_id)

    def list(self, *, status: JobStatus | None, limit: int, offset: int) -> JobPage:
        return self._store.list(status=status, limit=limit, offset=offset)

    def queue_position(self, job: Job) -> int:
        return self._store.queue_position(job)

    def count(self, status: JobStatus) -> int:
        return self._store.count(status)

    def counts(self) -> dict[str, int]:
        return {status.value: self._store.count(status) for status in JobStatus}

    def result(self, job: Job) -> dict[str, object] | None:
        return self.files.read_result(job.key)


__all__ = ["MAX_ATTEMPTS", "DuplicateJob", "JobCancelled", "JobQueue", "Running"]
