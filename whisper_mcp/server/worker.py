"""The inference thread: owns the models, runs jobs in queue order.

Short jobs (one 30 s window) that wait right behind each other with the same
model and options run together, in one forward pass (``batch_size`` at most).
The worker changes no job itself: it asks the queue (``queue.manager``) to
claim, report progress, complete or fail.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from whisper_mcp.engines.base import BatchItem, Engine, Segment, Transcription
from whisper_mcp.errors import INTERNAL_ERROR, ServiceError
from whisper_mcp.logs import job_event
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobCancelled, JobQueue
from whisper_mcp.server.metrics import Metrics

log = logging.getLogger("whisper_mcp.server.worker")

SWEEP_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerState:
    model_loaded: bool
    model_error: str | None


class InferenceWorker:
    def __init__(
        self,
        queue: JobQueue,
        engine: Engine,
        default_model: str,
        *,
        metrics: Metrics,
        batch_size: int = 1,
        nice: int = 0,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        self._queue = queue
        self._engine = engine
        self._default_model = default_model
        self._batch_size = max(1, batch_size)
        self._nice = nice
        self._metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._heartbeat_seconds = heartbeat_seconds
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        # Leases are renewed on a thread of their own: a decode window can take
        # longer than a lease on a slow machine, and must not lose the job.
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._lock = threading.Lock()
        self._model_loaded = False
        self._model_error: str | None = None

    def start(self) -> None:
        self._thread.start()
        self._heartbeat.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._heartbeat.join(timeout)

    def notify(self) -> None:
        """A job was queued: start it now if idle."""
        self._wake.set()

    def state(self) -> WorkerState:
        with self._lock:
            return WorkerState(self._model_loaded, self._model_error)

    def _beat(self) -> None:
        """Renew the leases of the running jobs; with replicas, also take back
        the jobs of replicas that stopped renewing theirs."""
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                self._queue.heartbeat()
                if self._queue.shared and self._queue.reclaim_expired():
                    self._wake.set()
            except Exception:  # the database is away for a moment: try again next beat
                log.warning("heartbeat failed", exc_info=True)

    def _run(self) -> None:
        self._lower_priority()
        self._load_default_model()
        while not self._stop.is_set():
            # Clear before looking, so a job queued after the look still wakes us.
            self._wake.clear()
            try:
                job = self._queue.claim_next()
            except Exception:  # the database is away for a moment: keep the thread alive
                log.exception("could not claim a job")
                self._stop.wait(1.0)
                continue
            if job is None:
                # Idle: wake for the next job, or now and then to unload idle models.
                if not self._wake.wait(SWEEP_SECONDS):
                    self._engine.pool.sweep()
                continue
            self._process([job, *self._batchmates(job)])

    def _batchmates(self, leader: Job) -> list[Job]:
        """Claim the queued jobs right behind ``leader`` that can share its forward pass."""
        # A job that runs again after the process died runs alone, so that one
        # file that kills the process cannot use up its batch-mates' attempts.
        if self._batch_size <= 1 or leader.attempts > 1 or not self._engine.can_batch(leader.duration, leader.options):
            return []

        def fits(job: Job) -> bool:
            same = (job.model, job.options, job.priority) == (leader.model, leader.options, leader.priority)
            return same and self._engine.can_batch(job.duration, job.options)

        return self._queue.claim_batch(leader, self._batch_size, fits)

    def _lower_priority(self) -> None:
        """Give this thread, and the torch threads it starts (they inherit it),
        a lower CPU priority than the event loop, so that requests are answered
        at once while the CPUs are busy with inference; with nothing else to
        run, inference still gets every core."""
        if self._nice <= 0:
            return
        try:
            # On Linux, PRIO_PROCESS with a thread id sets that thread alone.
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self._nice))
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed
            log.warning("could not lower the inference thread's priority: %s", exc)

    def _load_default_model(self) -> None:
        started = time.perf_counter()
        try:
            self._engine.load(self._engine.registry.resolve(self._default_model, trusted=True))
        except Exception as exc:  # reported by /health; jobs then fail with it
            log.exception("could not load model %s", self._default_model)
            with self._lock:  # shown by /health: words, not the exception (it may name paths)
                self._model_error = (
                    exc.message
                    if isinstance(exc, ServiceError)
                    else "the model could not be loaded; the server's log says why"
                )
            return
        with self._lock:
            self._model_loaded = True
        log.info(
            "model %s loaded in %.2fs on %s", self._default_model, time.perf_counter() - started, self._engine.device
        )

    def _process(self, jobs: list[Job]) -> None:
        """Run a job, or a batch of jobs with the same model and options."""
        batch = {"batch": len(jobs)} if len(jobs) > 1 else {}
        for job in jobs:
            waited = (job.started_at or time.time()) - job.created_at
            self._metrics.job_started(waited)
            job_event(
                log, "started", job.job_id, model=job.model, attempt=job.attempts, waited=round(waited, 4), **batch
            )
        if len(jobs) > 1:
            self._metrics.batch(len(jobs))
        started = time.perf_counter()
        leader = jobs[0]
        outcomes: list[Transcription | Exception]
        try:
            info = self._engine.registry.resolve(leader.model, trusted=True)  # checked at submission
            items = [
                BatchItem(self._queue.files.audio_path(job.key), job.duration, self._progress(job), self._segments(job))
                for job in jobs
            ]
            outcomes = self._engine.transcribe_batch(items, info, leader.options)
        except Exception as exc:  # e.g. the model failed to load: every job fails with it
            outcomes = [exc] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            self._finish(job, outcome, time.perf_counter() - started)

    def _finish(self, job: Job, outcome: Transcription | Exception, elapsed: float) -> None:
        error: str | None = None
        try:
            if isinstance(outcome, Exception):
                raise outcome
            status = self._queue.complete(job, outcome.to_dict(), outcome.language)
        except JobCancelled:  # on request, or the lease went to another replica
            status = self._queue.cancelled(job)
        except ServiceError as exc:  # e.g. audio that stopped decoding half-way
            status, error = "failed", exc.message
        except Exception:
            log.exception("job %s raised", job.job_id)
            status, error = "failed", INTERNAL_ERROR  # the exception is in the log
        if error is not None:
            status = self._queue.fail(job, error)
            self._metrics.errors.labels("job_failed").inc()
        self._metrics.job_finished(status, job.duration, elapsed)
        job_event(
            log,
            status,
            job.job_id,
            model=job.model,
            audio_seconds=job.duration,
            elapsed=round(elapsed, 3),
            rtf=round(elapsed / job.duration, 4) if job.duration else None,
            error=error,
        )

    def _progress(self, job: Job) -> Callable[[float], None]:
        return lambda fraction: self._queue.progress(job.job_id, fraction)

    def _segments(self, job: Job) -> Callable[[list[Segment]], None]:
        """Where each window's segments go as soon as they are decoded."""
        return lambda segments: self._queue.segments(job.job_id, [s.to_dict() for s in segments])
