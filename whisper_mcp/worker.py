"""The inference thread: owns the models, runs one job at a time in arrival order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .audio import decode_audio
from .engine import WhisperEngine
from .errors import ServiceError
from .jobs import Job, JobStore
from .logs import job_event
from .metrics import Metrics
from .storage import FileStore

log = logging.getLogger("whisper_mcp.worker")

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
    running: Running | None


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
    ) -> None:
        self._store = store
        self._files = files
        self._engine = engine
        self._default_model = default_model
        # Called from this thread whenever a job changes (job id); the service
        # uses it to wake waiters on the event loop.
        self._on_change = on_change
        self._delete_audio = delete_audio
        self._metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._lock = threading.Lock()
        self._running: Running | None = None
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
        """Ask the running job to stop at its next 30 s window; False if it is not running."""
        with self._lock:
            if self._running is None or self._running.job_id != job_id:
                return False
            self._running.cancel_requested = True
            return True

    def state(self) -> WorkerState:
        with self._lock:
            running = None if self._running is None else Running(**vars(self._running))
            return WorkerState(self._model_loaded, self._model_error, running)

    def _run(self) -> None:
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
            self._process(job)

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

    def _process(self, job: Job) -> None:
        started_at = time.time()
        with self._lock:
            self._running = Running(job.job_id, started_at)
        self._on_change(job.job_id)
        waited = started_at - job.created_at
        self._metrics.job_started(waited)
        job_event(log, "started", job.job_id, model=job.model, attempt=job.attempts, waited=round(waited, 4))
        started = time.perf_counter()
        status, error = "completed", None
        try:
            audio = decode_audio(self._files.audio_path(job.key))
            info = self._engine.registry.resolve(job.model, trusted=True)  # checked at submission
            result = self._engine.transcribe(audio, info, job.options, on_progress=self._progress(job.job_id))
            if self._cancel_requested(job.job_id):  # asked during the last window
                raise JobCancelled(job.job_id)
            self._files.write_result(job.key, result.to_dict())
            self._store.complete(job.job_id, time.time(), result.language)
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
                self._running = None
            if self._delete_audio:
                self._files.discard(self._files.audio_path(job.key))
        if error is not None:
            self._store.fail(job.job_id, time.time(), error)
            self._metrics.errors.labels("job_failed").inc()
        elapsed = time.perf_counter() - started
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
            return self._running is not None and self._running.job_id == job_id and self._running.cancel_requested

    def _progress(self, job_id: str) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            with self._lock:
                running = self._running
                if running is not None and running.job_id == job_id:
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
