"""The inference thread: owns the models, runs jobs in queue order.

Short jobs (one 30 s window) that wait right behind each other with the same
model and options run together, in one forward pass (``batch_size`` at most).
The worker changes no job itself: it asks the queue (``queue.manager``) to
claim, report progress, complete or fail. A job sent as a URL is claimed like
any other, fetched on a fetch thread (``FETCHES`` at once) while this one
decodes other jobs, and decoded here once its audio is stored.

Nothing stops the thread but ``stop``: a disk or database that fails under it
is waited out with a growing pause, and a job whose end cannot be recorded is
tried again in place, then sent back to the queue; meanwhile ``state()`` says
what holds the worker up (``/health``: degraded). On ``stop`` the running job
stops at its next window and goes back to the queue uncounted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue

from whisper_mcp.engines.base import BatchItem, Engine, Segment, Transcription
from whisper_mcp.errors import (
    INTERNAL_ERROR,
    DatabaseUnavailable,
    DependencyUnavailable,
    InsufficientStorage,
    InvalidInput,
    ServiceError,
    StorageUnavailable,
    storage_fault,
)
from whisper_mcp.heap import give_back_free_heap
from whisper_mcp.logs import job_event
from whisper_mcp.queue.files import JobFiles
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobCancelled, JobQueue, ShuttingDown
from whisper_mcp.server.audio_urls import AudioSources
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
# Jobs sent as a URL fetch their audio on threads of their own, this many at
# once, so that a slow server holds up its own job and not the queue.
FETCHES = 4


@dataclass(frozen=True)
class WorkerState:
    model_loaded: bool
    model_error: str | None
    running: bool = True  # the inference thread is alive (or not started yet)
    # Why the worker is held up now: no job starts (low disk space), or a
    # job's end cannot be recorded (a full disk, the database away).
    waiting: str | None = None


# While the object store is away, how often the loop looks for its return.
STORE_RETRY_SECONDS = 2.0


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
    elif isinstance(fault, StorageUnavailable):
        cause = "the object store is not available"
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
        sources: AudioSources | None = None,
    ) -> None:
        self._queue = queue
        # Where the runs of jobs sent as a URL fetch their audio; the fetches
        # under way, and those ended (the job fetched, or why not) for this
        # thread to decode or settle.
        self._sources = sources
        self._fetch_pool = ThreadPoolExecutor(FETCHES, thread_name_prefix="fetch")
        self._fetching = 0
        self._fetched_jobs: SimpleQueue[tuple[Job, Job | Exception]] = SimpleQueue()
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
            except DependencyUnavailable:  # the database or the bucket is away, logged where that is
                continue  # noticed (breaker, object store): beat again once it is back, no traceback a beat
            except Exception:  # the database failed for a moment: try again next beat
                log.warning("heartbeat failed", exc_info=True)

    def _run(self) -> None:
        self._lower_priority()
        self._load_default_model()
        failures = 0  # in a row: the pause before the next try grows with them
        worked = False  # since the queue was last seen empty
        while not self._stop.is_set():
            # Clear before looking, so a job queued after the look still wakes us.
            self._wake.clear()
            try:
                if self._decode_fetched():  # before claiming another: its audio is here
                    continue
                if not self._room_to_work():
                    failures += 1
                    self._stop.wait(_backoff(failures))
                    continue
                with self._lock:
                    fetches_full = self._fetching >= FETCHES
                if fetches_full:  # the next job may be one more: wait for a fetch to end
                    self._wake.wait(SWEEP_SECONDS)
                    continue
                job = self._queue.claim_next()
                if job is None:
                    failures = 0
                    if worked:  # the jobs' freed blocks stay in the heap while more follow (heap)
                        give_back_free_heap()
                        worked = False
                    # Idle: wake for the next job, or now and then to unload idle models.
                    if not self._wake.wait(SWEEP_SECONDS):
                        self._engine.pool.sweep()
                    continue
                if job.awaits_audio:
                    self._fetch_apart(job)
                    continue
                self._process([job, *self._batchmates(job)])
                failures = 0
                worked = True
            except DatabaseUnavailable:  # an outage (logged where it is noticed): resume as soon as it ends
                self._wait_for_database()
            except StorageUnavailable:  # the object store is away (logged there, once): look again soon
                failures += 1
                self._stop.wait(min(STORE_RETRY_SECONDS, _backoff(failures)))
            except Exception:  # e.g. the database is full: keep the thread alive
                failures += 1
                log.exception("the inference loop failed; trying again in %.0f s", _backoff(failures))
                self._stop.wait(_backoff(failures))
        self._release_fetched()

    def _fetch_apart(self, job: Job) -> None:
        """Fetch a claimed job's audio on a fetch thread (its lease renewed
        meanwhile by the heartbeat); this thread decodes it once it is here."""
        with self._lock:
            self._fetching += 1

        def fetch() -> None:
            outcome: Job | Exception
            try:
                outcome = self._fetched(job)
            except Exception as exc:  # the job fails (or is released, cancelled) with it
                outcome = exc
            self._fetched_jobs.put((job, outcome))
            with self._lock:
                self._fetching -= 1
            self._wake.set()

        self._fetch_pool.submit(fetch)

    def _decode_fetched(self) -> bool:
        """Decode a job whose fetch has ended, or end it as its fetch did;
        False if none is waiting."""
        try:
            job, outcome = self._fetched_jobs.get_nowait()
        except Empty:
            return False
        if isinstance(outcome, Exception):
            self._started([job])
            self._finish(job, outcome, 0.0)
        else:
            self._process([outcome])
        return True

    def _release_fetched(self) -> None:
        """Stopping: the fetches stop at their next report (``ShuttingDown``),
        and every job fetched or stopped goes back to the queue, its audio kept."""
        self._fetch_pool.shutdown(wait=True)
        while True:
            try:
                job, outcome = self._fetched_jobs.get_nowait()
            except Empty:
                return
            self._finish(job, outcome if isinstance(outcome, Exception) else ShuttingDown(job.job_id), 0.0)

    def _wait_for_database(self) -> None:
        """Until the database can be reached again (its watch says when), or ``stop``."""
        while not self._stop.is_set() and not self._queue.wait_available(0.5):
            pass

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
        if leader.awaits_audio:  # its length is known once fetched: it runs alone
            return []
        if self._stop.is_set():
            return []

        def fits(job: Job) -> bool:
            same = (job.model, job.options, job.priority) == (leader.model, leader.options, leader.priority)
            return same and not job.awaits_audio and self._engine.can_batch(job.duration, job.options)

        try:
            return self._queue.claim_batch(leader, self._batch_size, fits)
        except Exception as exc:  # the leader is claimed: run it alone rather than strand it
            if not isinstance(exc, DatabaseUnavailable):
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

    def _started(self, jobs: list[Job]) -> None:
        batch = {"batch": len(jobs)} if len(jobs) > 1 else {}
        for job in jobs:
            waited = (job.started_at or time.time()) - job.created_at
            self._metrics.job_started(waited)
            job_event(
                log, "started", job.job_id, model=job.model, attempt=job.attempts, waited=round(waited, 4), **batch
            )

    def _process(self, jobs: list[Job]) -> None:
        """Run a job, or a batch of jobs with the same model and options."""
        self._started(jobs)
        if len(jobs) > 1:
            self._metrics.batch(len(jobs))
        started = time.perf_counter()
        outcomes: dict[str, Transcription | Exception] = {}
        # The audio as local files while it is decoded: in place in the
        # storage folder, or fetched from a bucket to scratch and removed after.
        with contextlib.ExitStack() as fetched:
            ready: list[tuple[Job, JobFiles]] = []
            for job in jobs:
                try:
                    speakers = len(job.options.known_speakers)
                    ready.append((job, fetched.enter_context(self._queue.files.job_files(job.key, speakers))))
                except Exception as exc:  # gone (DataMissing), or the object store is away
                    outcomes[job.job_id] = exc
            try:
                if ready:
                    info = self._engine.registry.resolve(jobs[0].model, trusted=True)  # checked at submission
                    items = [
                        BatchItem(
                            local.audio,
                            job.duration,
                            self._progress(job),
                            self._segments(job),
                            tuple(
                                (name, path)
                                for (name, _sha), path in zip(job.options.known_speakers, local.references, strict=True)
                            ),
                        )
                        for job, local in ready
                    ]
                    with self.gate.batch():
                        decoded = self._engine.transcribe_batch(items, info, ready[0][0].options)
                    outcomes.update(zip((job.job_id for job, _ in ready), decoded, strict=True))
            except Exception as exc:  # e.g. the model failed to load: every job fails with it
                outcomes.update((job.job_id, exc) for job, _ in ready)
        away: StorageUnavailable | None = None
        for job in jobs:
            outcome = outcomes[job.job_id]
            if isinstance(outcome, StorageUnavailable):
                self._put_back(job)
                away = outcome
            else:
                self._finish(job, outcome, time.perf_counter() - started)
        if away is not None:
            raise away  # the loop waits a while before it claims again

    def _put_back(self, job: Job) -> None:
        """A run whose audio could not be fetched (the object store is away):
        back to the queue in its old place, the attempt not counted, since
        the job did nothing wrong."""
        try:
            status = self._queue.release(job)
        except Exception:  # the store or the database failed again: its lease runs out, recovery settles it
            self._queue.forget(job)
            return
        job_event(log, status, job.job_id, model=job.model, error="the object store is not available")

    def _fetched(self, job: Job) -> Job:
        """Blocking, on a fetch thread: the job sent as a URL, its audio
        fetched and stored (a failed fetch fails the job, in the fetcher's words)."""
        if self._sources is None:
            raise InvalidInput("This server does not fetch audio URLs; send the file itself.")
        return self._sources.fetch(job, self._progress(job))

    def _finish(self, job: Job, outcome: Transcription | Exception, elapsed: float) -> None:
        """Record how the run ended; a disk or database failure is waited out
        and tried again, so no job is left half-ended."""
        failures = 0
        away = False  # the database is away: waited out however long, logged once
        while True:
            try:
                status, error = self._settle(job, outcome, give_up=failures >= SAVE_TRIES - 1)
                break
            except Exception as exc:  # the disk or the database failed under us
                if self._stop.is_set():
                    log.error("job %s: could not record its end (%s); recovered at the next start", job.job_id, exc)
                    self._queue.forget(job)
                    self._held_up(None)
                    return
                self._held_up(_holdup(exc))
                if isinstance(exc, DatabaseUnavailable):
                    if not away:
                        log.info("job %s: its end is recorded once the job database is back", job.job_id)
                    away = True
                    self._wait_for_database()
                    continue
                failures += 1
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
            # A bucket that is away is waited for with the transcript in hand:
            # decoding again would need the bucket too.
            if _transient(exc):
                if not give_up or isinstance(exc, StorageUnavailable):
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
