"""The inference thread: owns the models, runs jobs in queue order.

Short jobs (one 30 s window) that wait right behind each other with the same
model and options run together, in one forward pass (``batch_size`` at most).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from whisper_mcp.engines.engine import BatchItem, Transcription, WhisperEngine
from whisper_mcp.errors import ServiceError
from whisper_mcp.queue.jobs import Job, JobStore
from whisper_mcp.logs import job_event
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.queue.files import FileStore

log = logging.getLogger("whisper_mcp.server.worker")

MAX_ATTEMPTS = 3
SWEEP_SECONDS = 30.0


@dataclass
class Running:
    """What the worker is doing now; read by status and health."""

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


class JobCancelled(Exception):
    """Raised from the progress hook to stop decoding at a window boundary."""


@dataclass(frozen=True)
class WorkerState:
    model_loaded: bool
    model_error: str | None
    running: tuple[Running, ...]  # the job, or the batch of jobs, being transcribed

    def job(self, job_id: str) -> Running | None:
        return next((r for r in self.running if r.job_id == job_id), None)


class InferenceWorker:
    def __init__(
        self,
        store: JobStore,
        files: FileStore,
        engine: WhisperEngine,
        default_model: str,
        on_change: Callable[[str], None],
        *,
        metrics: Metrics,
        delete_audio: bool = True,
        batch_size: int = 1,
        nice: int = 0,
    ) -> None:
        self._store = store
        self._files = files
        self._engine = engine
        self._default_model = default_model
        # Called from this thread whenever a job changes (job id); the service
        # uses it to wake waiters on the event loop.
        self._on_change = on_change
        self._delete_audio = delete_audio
        self._batch_size = max(1, batch_size)
        self._nice = nice
        self._metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._model_loaded = False
        self._model_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def notify(self) -> None:
        """A job was queued: start it now if idle."""
        self._wake.set()

    def request_cancel(self, job_id: str) -> bool:
        """Ask a running job to stop at its next 30 s window; False if it is not running."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return False
            running.cancel_requested = True
            return True

    def state(self) -> WorkerState:
        with self._lock:
            running = tuple(Running(**vars(r)) for r in self._running.values())
            return WorkerState(self._model_loaded, self._model_error, running)

    def _run(self) -> None:
        self._lower_priority()
        self._load_default_model()
        while not self._stop.is_set():
            # Clear before looking, so a job queued after the look still wakes us.
            self._wake.clear()
            job = self._store.claim_next(time.time())
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
        mates: list[Job] = []
        for job in self._store.queued(self._batch_size - 1):
            same = (job.model, job.options, job.priority) == (leader.model, leader.options, leader.priority)
            if not same or job.attempts > 0 or not self._engine.can_batch(job.duration, job.options):
                break  # never run a job ahead of one queued before it
            # Started with the leader: same forward pass, same start time.
            claimed = self._store.claim(job.job_id, leader.started_at or time.time())
            if claimed is not None:  # else cancelled since the look
                mates.append(claimed)
        return mates

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
            with self._lock:
                self._model_error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self._model_loaded = True
        log.info(
            "model %s loaded in %.2fs on %s", self._default_model, time.perf_counter() - started, self._engine.device
        )

    def _process(self, jobs: list[Job]) -> None:
        """Run a job, or a batch of jobs with the same model and options."""
        started_at = time.time()
        with self._lock:
            self._running = {job.job_id: Running(job.job_id, started_at) for job in jobs}
        batch = {"batch": len(jobs)} if len(jobs) > 1 else {}
        for job in jobs:
            self._on_change(job.job_id)
            waited = started_at - job.created_at
            self._metrics.job_started(waited)
            job_event(log, "started", job.job_id, model=job.model, attempt=job.attempts, waited=round(waited, 4), **batch)
        if len(jobs) > 1:
            self._metrics.batch(len(jobs))
        started = time.perf_counter()
        leader = jobs[0]
        outcomes: list[Transcription | Exception]
        try:
            info = self._engine.registry.resolve(leader.model, trusted=True)  # checked at submission
            items = [
                BatchItem(self._files.audio_path(job.key), job.duration, self._progress(job.job_id))
                for job in jobs
            ]
            outcomes = self._engine.transcribe_batch(items, info, leader.options)
        except Exception as exc:  # e.g. the model failed to load: every job fails with it
            outcomes = [exc] * len(jobs)
        for job, outcome in zip(jobs, outcomes):
            self._finish(job, outcome, time.perf_counter() - started)

    def _finish(self, job: Job, outcome: Transcription | Exception, elapsed: float) -> None:
        status, error = "completed", None
        try:
            if isinstance(outcome, Exception):
                raise outcome
            if self._cancel_requested(job.job_id):  # asked during the last window
                raise JobCancelled(job.job_id)
            self._files.write_result(job.key, outcome.to_dict())
            self._store.complete(job.job_id, time.time(), outcome.language)
        except JobCancelled:
            status = "cancelled"
            self._store.cancel(job.job_id, time.time(), running=True)
        except ServiceError as exc:  # e.g. audio that stopped decoding half-way
            status, error = "failed", exc.message
        except Exception as exc:
            log.exception("job %s raised", job.job_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
            if self._delete_audio:
                self._files.discard(self._files.audio_path(job.key))
        if error is not None:
            self._store.fail(job.job_id, time.time(), error)
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
        self._on_change(job.job_id)

    def _cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            running = self._running.get(job_id)
            return running is not None and running.cancel_requested

    def _progress(self, job_id: str) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            with self._lock:
                running = self._running.get(job_id)
                if running is not None:
                    running.progress = fraction
                    if running.cancel_requested:
                        raise JobCancelled(job_id)
            self._on_change(job_id)

        return report


def recover(store: JobStore, files: FileStore, delete_audio: bool = True) -> list[str]:
    """Start-up: settle jobs that a dead process left ``processing``.

    A job whose transcript was fully written completes now; any other is queued
    again and keeps its place. Returns the ids that will run again.
    """
    again = []
    for job in store.recover_interrupted():
        if files.has_result(job.key):  # died after writing the transcript: it is done
            result = files.read_result(job.key) or {}
            store.complete(job.job_id, time.time(), result.get("language"))  # type: ignore[arg-type]
        elif job.attempts >= MAX_ATTEMPTS:
            # Audio that kills the process every time must not stop the queue forever.
            store.fail(job.job_id, time.time(), f"The server stopped {job.attempts} times while running this job; giving up.")
        else:
            store.requeue(job.job_id)
            again.append(job.job_id)
    if delete_audio:
        # Audio of ended jobs, or of uploads that died before their job was stored.
        live = store.active_keys()
        for path in files.audio_dir.iterdir():
            if path.name not in live:
                files.discard(path)
    files.clear_incoming()
    return again
