"""The inference thread: owns the models, runs jobs in queue order.

Short jobs (one 30 s window) that wait right behind each other with the same
model and options run together, in one forward pass (``batch_size`` at most).
The worker changes no job itself: it asks the queue (``queue.manager``) to
claim, report progress, complete or fail.

Nothing stops the thread but ``stop``: a disk or database that fails under it
is waited out with a growing pause, and a job whose end cannot be recorded is
tried again in place, then sent back to the queue; meanwhile ``state()`` says
what holds the worker up (``/health``: degraded). On ``stop`` the running job
stops at its next window and goes back to the queue uncounted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from whisper_mcp.engines.base import BatchItem, Engine, Segment, Transcription
from whisper_mcp.errors import INTERNAL_ERROR, InsufficientStorage, ServiceError, storage_fault
from whisper_mcp.logs import job_event
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobCancelled, JobQueue, ShuttingDown
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.sharing import InferenceGate

log = logging.getLogger("whisper_mcp.server.worker")

SWEEP_SECONDS = 30.0
# After the disk or database fails under the worker it pauses 1 s, doubling
# with each failure in a row, up to this.
MAX_BACKOFF_SECONDS = 30.0
# A transcript that cannot be saved (disk full) is tried this many times in
# place, then its job goes back to the queue (``JobQueue.retry_later``).
SAVE_TRIES = 4
# stop() waits this long for the running window to end and its job to be released.
STOP_SECONDS = 60.0
NO_SPACE_MESSAGE = "The server ran out of disk space while saving the transcript; submit the file again later."


@dataclass(frozen=True)
class WorkerState:
    model_loaded: bool
    model_error: str | None
    running: bool = True  # the inference thread is alive (or not started yet)
    # Why the worker is held up now: no job starts (low disk space), or a
    # job's end cannot be recorded (a full disk, the database away).
    waiting: str | None = None


def _backoff(failures: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, failures - 1))


def _transient(exc: BaseException) -> bool:
    """A failure of the disk or the database, not of the job: worth trying again."""
    return isinstance(exc, InsufficientStorage) or storage_fault(exc) is not None


def _holdup(exc: BaseException) -> str:
    """What keeps a job's end from being recorded, for /health: words, not
    the exception (it may name paths)."""
    fault = exc if isinstance(exc, InsufficientStorage) else storage_fault(exc)
    if isinstance(fault, InsufficientStorage):
        cause = "the disk is full"
    elif fault is not None:
        cause = "the job database is not available"
    else:
        cause = "the disk or the job database failed; the server's log says why"
    return f"waiting to record a job's end: {cause}"


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
        self._waiting: str | None = None
        self._recording: str | None = None  # why a job's end is not recorded yet
        # The loaded models are shared with live transcription (server.sharing).
        self.gate = InferenceGate()

    def start(self) -> None:
        self._thread.start()
        self._heartbeat.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Take no more jobs; the running one stops at its next window and goes
        back to the queue without counting an attempt (``ShuttingDown``)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the running window did not end within %.0f s; its job is recovered at the next start", timeout)
        self._heartbeat.join(5.0)

    @property
    def alive(self) -> bool:
        """False once the inference thread has ended while it should run."""
        return self._thread.is_alive() or self._thread.ident is None or self._stop.is_set()

    def notify(self) -> None:
        """A job was queued: start it now if idle."""
        self._wake.set()

    def state(self) -> WorkerState:
        with self._lock:
            return WorkerState(self._model_loaded, self._model_error, self.alive, self._recording or self._waiting)

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
        failures = 0  # in a row: the pause before the next try grows with them
        while not self._stop.is_set():
            # Clear before looking, so a job queued after the look still wakes us.
            self._wake.clear()
            try:
                if not self._room_to_work():
                    failures += 1
                    self._stop.wait(_backoff(failures))
                    continue
                job = self._queue.claim_next()
                if job is None:
                    failures = 0
                    # Idle: wake for the next job, or now and then to unload idle models.
                    if not self._wake.wait(SWEEP_SECONDS):
                        self._engine.pool.sweep()
                    continue
                self._process([job, *self._batchmates(job)])
                failures = 0
            except Exception:  # e.g. the database is away or full: keep the thread alive
                failures += 1
                log.exception("the inference loop failed; trying again in %.0f s", _backoff(failures))
                self._stop.wait(_backoff(failures))

    def _room_to_work(self) -> bool:
        """Whether the storage disk has --min-free-mb free: if not, no job
        starts, since its transcript could not be saved."""
        try:
            low = shutil.disk_usage(self._queue.files.root).free < self._queue.min_free_bytes
        except OSError:
            low = False  # cannot tell: let the writes themselves fail or succeed
        waiting = "waiting for free disk space" if low else None
        with self._lock:
            if waiting != self._waiting:
                (log.warning if low else log.info)("storage disk: %s", waiting or "space is free again")
            self._waiting = waiting
        return not low

    def _batchmates(self, leader: Job) -> list[Job]:
        """Claim the queued jobs right behind ``leader`` that can share its forward pass."""
        # A job that runs again after the process died runs alone, so that one
        # file that kills the process cannot use up its batch-mates' attempts.
        if self._batch_size <= 1 or leader.attempts > 1 or not self._engine.can_batch(leader.duration, leader.options):
            return []
        if self._stop.is_set():
            return []

        def fits(job: Job) -> bool:
            same = (job.model, job.options, job.priority) == (leader.model, leader.options, leader.priority)
            return same and self._engine.can_batch(job.duration, job.options)

        try:
            return self._queue.claim_batch(leader, self._batch_size, fits)
        except Exception:  # the leader is claimed: run it alone rather than strand it
            log.exception("could not claim batch-mates for job %s", leader.job_id)
            return []

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
            files = self._queue.files
            items = [
                BatchItem(
                    files.audio_path(job.key),
                    job.duration,
                    self._progress(job),
                    self._segments(job),
                    tuple(
                        (name, files.reference_path(job.key, i))
                        for i, (name, _sha) in enumerate(job.options.known_speakers)
                    ),
                )
                for job in jobs
            ]
            with self.gate.batch():
                outcomes = self._engine.transcribe_batch(items, info, leader.options)
        except Exception as exc:  # e.g. the model failed to load: every job fails with it
            outcomes = [exc] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            self._finish(job, outcome, time.perf_counter() - started)

    def _finish(self, job: Job, outcome: Transcription | Exception, elapsed: float) -> None:
        """Record how the run ended; a disk or database failure is waited out
        and tried again, so no job is left half-ended."""
        failures = 0
        while True:
            try:
                status, error = self._settle(job, outcome, give_up=failures >= SAVE_TRIES - 1)
                break
            except Exception as exc:  # the disk or the database failed under us
                failures += 1
                if self._stop.is_set():
                    log.error("job %s: could not record its end (%s); recovered at the next start", job.job_id, exc)
                    self._queue.forget(job)
                    self._held_up(None)
                    return
                self._held_up(_holdup(exc))
                log.warning(
                    "job %s: could not record its end (%s: %s); trying again in %.0f s",
                    job.job_id,
                    type(exc).__name__,
                    exc,
                    _backoff(failures),
                )
                self._stop.wait(_backoff(failures))
        self._held_up(None)
        if status == "failed":
            self._metrics.errors.labels("job_failed").inc()
        if status != "queued":
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

    def _held_up(self, why: str | None) -> None:
        with self._lock:
            self._recording = why

    def _settle(self, job: Job, outcome: Transcription | Exception, *, give_up: bool) -> tuple[str, str | None]:
        """End the run as ``outcome`` says; (status, error). Raises on a failure
        of the disk or the database, unless ``give_up``: the job then goes back
        to the queue (``retry_later``)."""
        try:
            if isinstance(outcome, Exception):
                raise outcome
            return self._queue.complete(job, outcome.to_dict(), outcome.language), None
        except ShuttingDown:  # the server is stopping: not the job's fault
            return self._queue.release(job), None
        except JobCancelled:  # on request, or the lease went to another replica
            return self._queue.cancelled(job), None
        except Exception as exc:
            if _transient(exc):
                if not give_up:
                    raise
                status = self._queue.retry_later(job, NO_SPACE_MESSAGE)
                return status, NO_SPACE_MESSAGE if status == "failed" else None
            if isinstance(exc, ServiceError):  # e.g. audio that stopped decoding half-way
                error = exc.message
            else:
                log.error("job %s raised", job.job_id, exc_info=exc)
                error = INTERNAL_ERROR  # the exception is in the log
            return self._queue.fail(job, error), error

    def _progress(self, job: Job) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            # Called at every window (silent ones too): where a cancel, or a
            # shutdown, stops decoding.
            if self._stop.is_set() and fraction < 1.0:  # a finished decode is kept
                raise ShuttingDown(job.job_id)
            self.gate.between_windows()  # a live decode waiting goes first
            self._queue.progress(job.job_id, fraction)

        return report

    def _segments(self, job: Job) -> Callable[[list[Segment]], None]:
        """Where each window's segments go as soon as they are decoded."""
        return lambda segments: self._queue.segments(job.job_id, [s.to_dict() for s in segments])
