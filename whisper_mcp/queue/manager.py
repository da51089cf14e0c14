"""The job queue: the only code that changes a job's state.

Everything that moves a job (enqueue, claim, progress, complete, fail,
cancel, lease renewal and reclaim, recovery, expiry, callback delivery) is a
method here, so one file tells what can happen to a job and in which order.
The worker, the service, the callback sender and the transports ask; they
never write job rows or job files themselves. (The model is procrastinate's
``JobManager``.)

State lives in the database (SQL in ``store.py``) and storage (the folder,
``files.py``, or a bucket, ``objects.py``), so any replica answers for any job. A claim is a lease that
the worker's heartbeat renews; a replica that dies stops renewing, and any
replica then reclaims the job. Every method blocks (database, file I/O): call
them from worker threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from whisper_mcp.errors import DatabaseUnavailable, DataMissing, NoRecording, StorageUnavailable
from whisper_mcp.logs import job_event
from whisper_mcp.options import PRIORITY_NAMES
from whisper_mcp.queue.files import StoredUpload
from whisper_mcp.queue.jobs import DuplicateJob, Job, JobPage, JobRequest, JobStatus
from whisper_mcp.queue.partial import PartialCursor
from whisper_mcp.queue.storage import Storage
from whisper_mcp.queue.store import SQLJobStore

log = logging.getLogger("whisper_mcp.queue")

# A job that was running when its process died this many times fails instead
# of running again: audio that kills the process must not stop the queue.
# After its first such stop a job runs alone (worker), so the later stops
# are its own or bad luck; five keeps bad luck (replicas killed by an
# orchestrator, a node lost) from failing good jobs while a file that does
# crash the decoder costs a handful of restarts, not the queue.
MAX_ATTEMPTS = 5
# Progress is written to the database at most this often per job.
PROGRESS_INTERVAL = 0.5
# Shared storage: files in audio/ or incoming/ that no job owns are removed
# only once untouched this long, since another replica may be writing them.
ORPHAN_GRACE_SECONDS = 3600.0


class JobCancelled(Exception):
    """Raised from a progress report to stop decoding at a window boundary."""


class LeaseLost(JobCancelled):
    """This run no longer holds the job (its lease expired and another replica
    took it): stop, and leave the job to its new owner."""


class ShuttingDown(Exception):
    """Raised from a progress report when the server is stopping: decoding
    stops at this window and the job goes back to the queue (``release``)."""


@dataclass
class Running:
    """A run this process holds: its claim, and what it last reported."""

    job: Job
    progress: float = 0.0
    cancel_requested: bool = False
    lost: bool = False
    # Its end is being recorded: no longer shown as running, so that no
    # reader sees it running after its end is in the database.
    ending: bool = False
    written_at: float = 0.0  # when progress last went to the database
    # Decoded segments not yet appended to the partial file (a write failed).
    unwritten: list[dict[str, object]] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.job.job_id


class JobQueue:
    def __init__(
        self,
        store: SQLJobStore,
        files: Storage,
        *,
        replica_id: str = "local",
        lease_seconds: float = 30.0,
        delete_audio: bool = True,
        min_free_bytes: int = 0,
    ) -> None:
        self._store = store
        self.files = files
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds
        # Several replicas share the database (and the storage folder, or a bucket).
        self.shared = store.db.shared
        self._delete_audio = delete_audio
        # A transcript is written only if the disk keeps this much free after it.
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        # Called (job id) after every change, from whichever thread made it,
        # here or (through the database's notifications) on another replica.
        self._listeners: list[Callable[[str], None]] = []
        # ``version``: changes seen, and writes that may change which jobs are
        # queued still under way (readers cache the queued count by it).
        self._version = 0
        self._writing = 0
        self._version_lock = threading.Lock()
        store.db.listen(self._changed)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """``listener(job_id)`` after every change; an empty id when the
        database is back after an outage (anything may have changed)."""
        self._listeners.append(listener)

    def on_availability(self, listener: Callable[[bool], None]) -> None:
        """``listener(False)`` when the shared database can no longer be reached, ``listener(True)`` when it is back."""
        self._store.db.on_availability(listener)

    def wait_available(self, timeout: float) -> bool:
        """Whether the database can be reached, waiting up to ``timeout`` seconds for it."""
        return self._store.db.wait_available(timeout)

    def check_available(self) -> None:
        """``DatabaseUnavailable`` (or ``StorageUnavailable``) now if the
        database (or the object store) is known to be away."""
        if not self._store.db.wait_available(0):
            raise DatabaseUnavailable()
        self.files.check_available()

    def _changed(self, job_id: str) -> None:
        with self._version_lock:
            self._version += 1
        for listener in self._listeners:
            listener(job_id)

    @property
    def version(self) -> tuple[int, bool]:
        """Changes seen so far (here, or by notification from other replicas),
        and whether a write of this process that may change which jobs are
        queued is under way. A count of queued jobs read at one version holds
        until it changes, unless a write was under way: it may commit after
        the count was read, and be seen (in a job's status) before it is
        announced."""
        with self._version_lock:
            return self._version, self._writing > 0

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a store write that may change which jobs are queued: under
        way in ``version`` before it commits, a new version once it has."""
        with self._version_lock:
            self._writing += 1
        try:
            yield
        finally:
            with self._version_lock:
                self._writing -= 1
                self._version += 1

    def close(self) -> None:
        self._store.close()

    # -- enqueue ----------------------------------------------------------

    def enqueue(
        self,
        upload: StoredUpload | None,
        request: JobRequest,
        *,
        use_cache: bool = True,
        references: Sequence[bytes] = (),
    ) -> Job:
        """Store a job for ``upload`` (consumed on success), with its known
        speakers' ``references`` (recordings, in the order of
        ``request.options.known_speakers``). A transcript already made from the
        same audio, model, options and engine is reused: the job is stored
        completed. No upload: a job sent as ``request.audio_url``, whose run
        fetches its audio (``fetched``). Raises ``DuplicateJob`` if the id is taken."""
        earlier = (
            self._store.find_completed(request.audio_sha256, request.model, request.options, request.engine)
            if use_cache and upload is not None
            else None
        )
        result = self.files.read_result(earlier.key) if earlier is not None else None
        if earlier is not None and result is not None:
            self.files.write_result(request.key, result)
            try:
                job = self._store.add(replace(request, cached_from=earlier.job_id), time.time())
            except BaseException:
                self.files.discard_result(request.key)
                raise
        else:
            # Audio lands in place first: a queued job always has its files.
            try:
                self.files.write_references(request.key, list(references))
                if upload is not None:
                    self.files.accept(upload, request.key)
                with self._changing():
                    job = self._store.add(request, time.time())
            except BaseException:
                self.files.discard_audio(request.key)
                raise
            # Logged before anyone is told, so "queued" always precedes "started".
            job_event(
                log,
                "queued",
                job.job_id,
                model=job.model,
                priority=PRIORITY_NAMES[job.priority],
                bytes=job.audio_bytes,
                audio_seconds=job.duration,
            )
        self._changed(job.job_id)
        return job

    # -- claim ------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """The next queued job (priority, then arrival), now processing and leased to this replica."""
        with self._changing():
            job = self._store.claim_next(self.replica_id, self.lease_seconds, time.time())
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
            with self._changing():
                claimed = self._store.claim(
                    job.job_id, self.replica_id, self.lease_seconds, leader.started_at or time.time()
                )
            if claimed is not None:  # else cancelled, or taken by another replica, since the look
                mates.append(claimed)
        self._start(mates)
        return mates

    def _start(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._running[job.job_id] = Running(job)
        for job in jobs:
            self._changed(job.job_id)

    def heartbeat(self) -> None:
        """Renew this replica's leases (call well within ``lease_seconds``,
        whatever the decoder is doing), and learn of cancels asked elsewhere.
        Only this process's runs: a job an earlier process of the same name
        was running when it died is left to expire and be taken over."""
        with self._lock:
            runs = [(r.job_id, r.job.attempts) for r in self._running.values()]
        held = self._store.renew(self.replica_id, self.lease_seconds, runs)
        with self._lock:
            # Only the runs renewed just now: one claimed meanwhile is not lost.
            for job_id, attempt in runs:
                running = self._running.get(job_id)
                if running is None or running.job.attempts != attempt:
                    continue
                if job_id not in held:
                    running.lost = True
                elif held[job_id]:
                    running.cancel_requested = True

    # -- progress and the end of a run -----------------------------------

    def progress(self, job_id: str, fraction: float) -> None:
        """Record how far a run has got; raises ``JobCancelled`` if a cancel
        was asked (here or on any replica), ``LeaseLost`` if another replica
        took the job, so decoding stops at this window."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return
            running.progress = fraction
            due = time.monotonic() - running.written_at >= PROGRESS_INTERVAL or fraction >= 1.0
            if due:
                running.written_at = time.monotonic()
            attempt = running.job.attempts
        if due:
            try:
                cancel = self._store.progress(job_id, attempt, fraction)
            except DatabaseUnavailable:  # decoding goes on; its end is recorded once the database is back
                cancel = False
            with self._lock:
                if cancel is None:
                    running.lost = True
                elif cancel:
                    running.cancel_requested = True
        self._changed(job_id)
        if running.lost:
            raise LeaseLost(job_id)
        if running.cancel_requested:
            raise JobCancelled(job_id)

    def segments(self, job_id: str, new: Sequence[Mapping[str, object]]) -> None:
        """Keep the segments a run has just decoded where every caller, on
        any replica, reads them while the job runs (``partial``): appended
        under storage, one file per attempt, so a run that lost its lease
        never writes into its successor's. Best effort: a failed write (a
        full disk) costs the partial view, not the job, and its segments
        go with the next window's."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None or running.lost or not new:
                return
            running.unwritten.extend(dict(s) for s in new)
            pending, attempt = list(running.unwritten), running.job.attempts
        try:
            self.files.append_partial(running.job.key, attempt, pending)
        except (OSError, StorageUnavailable) as exc:
            log.warning("job %s: could not keep its partial transcript: %s", job_id, exc)
            return
        with self._lock:
            del running.unwritten[: len(pending)]
        with contextlib.suppress(DatabaseUnavailable):  # other replicas' followers; this one's below
            self._store.db.notify(job_id)
        self._changed(job_id)

    def partial(self, job: Job, cursor: PartialCursor | None = None) -> list[dict[str, object]]:
        """The segments decoded so far by the job's current run (or, until a
        re-run catches up, by the run before it); empty unless processing.
        With ``cursor``: only those it has not had yet."""
        if job.status is not JobStatus.PROCESSING:
            return []
        return self.files.read_partial(job.key, job.attempts, cursor)

    def running(self) -> tuple[Running, ...]:
        """Copies of the runs this process holds now (not those whose end is being recorded)."""
        with self._lock:
            return tuple(replace(r) for r in self._running.values() if not r.ending)

    def fetched(self, job: Job, upload: StoredUpload, duration: float) -> Job:
        """A run of a job sent as a URL has fetched its audio (``upload``,
        consumed): stored as an upload's would have been, its facts recorded.
        Raises ``LeaseLost`` if another replica holds the job now."""
        self.files.accept(upload, job.key)
        done = self._store.fetched(job.job_id, job.attempts, upload.sha256, upload.size, duration)
        if done is None:
            raise LeaseLost(job.job_id)
        with self._lock:
            if (running := self._running.get(job.job_id)) is not None:
                running.job = done
        self._changed(job.job_id)
        return done

    def complete(self, job: Job, result: dict[str, object], language: str | None) -> str:
        """End a run with its transcript, or ``cancelled`` if a cancel came
        during the last window. Returns the status the job ended with, or
        ``lost`` if another replica holds the job now."""
        held = self._held(job)
        if held is not None:
            return held
        self.files.write_result(job.key, result, self.min_free_bytes)
        with self._ending(job):
            done = self._store.complete(job.job_id, job.attempts, time.time(), language)
        return self._end(job, self._ended_as(job, JobStatus.COMPLETED, done))

    def fail(self, job: Job, error: str) -> str:
        with self._ending(job):
            done = self._store.fail(job.job_id, job.attempts, time.time(), error)
        return self._end(job, self._ended_as(job, JobStatus.FAILED, done))

    def _ended_as(self, job: Job, status: JobStatus, done: bool) -> str:
        """``status`` if this run's end is recorded, else ``lost``. A write
        that changed nothing may still be this run's own: an earlier try that
        the database committed though its answer never came back (it went
        away mid-commit), and the worker tried again."""
        if not done:
            now = self._store.get(job.job_id)
            done = now is not None and now.status is status and now.attempts == job.attempts
        return status.value if done else "lost"

    @contextlib.contextmanager
    def _ending(self, job: Job) -> Iterator[None]:
        """While a run's end is recorded: hidden from ``running``; shown again
        if recording it failed (the run goes on, or is retried)."""
        with self._lock:
            running = self._running.get(job.job_id)
            if running is not None:
                running.ending = True
        try:
            yield
        except BaseException:
            if running is not None:
                with self._lock:  # as it was set: readers copy runs under the lock
                    running.ending = False
            raise

    def release(self, job: Job) -> str:
        """A run stopped because this server is shutting down (``ShuttingDown``):
        back to the queue in its old place, and the attempt does not count,
        since the job did nothing wrong. A run with a cancel asked ends
        cancelled instead. Returns ``queued``, ``cancelled`` or ``lost``."""
        held = self._held(job)
        if held is not None:
            return held
        with self._changing():
            released = self._store.release(job.job_id, job.attempts)
        if released:
            status = JobStatus.QUEUED.value
        elif self._store.cancel_running(job.job_id, job.attempts, time.time()):  # asked on another replica
            status = JobStatus.CANCELLED.value
        else:
            status = "lost"
        with self._lock:
            self._running.pop(job.job_id, None)
        if status == JobStatus.CANCELLED.value and self._delete_audio:
            self.files.discard_audio(job.key)
        self._changed(job.job_id)
        return status

    def retry_later(self, job: Job, error: str) -> str:
        """A run that could not be recorded for a passing reason (the disk is
        full): back to the queue, the attempt counted, so it is tried again
        once there is room, and fails with ``error`` after ``MAX_ATTEMPTS``
        tries. Returns ``queued``, ``failed`` or ``lost``."""
        self.files.discard_result(job.key)  # a transcript half-written, if any
        held = self._held(job)
        if held is not None:
            return held
        if job.attempts >= MAX_ATTEMPTS:
            return self.fail(job, error)
        with self._changing():
            done = self._store.requeue(job.job_id, job.attempts)
        with self._lock:
            self._running.pop(job.job_id, None)
        self._changed(job.job_id)
        return JobStatus.QUEUED.value if done else "lost"

    def forget(self, job: Job) -> None:
        """Stop renewing a run this process cannot settle (the database is
        unreachable): its lease runs out and recovery settles it."""
        with self._lock:
            self._running.pop(job.job_id, None)

    def cancelled(self, job: Job) -> str:
        """A run stopped by ``JobCancelled`` (or ``LeaseLost``)."""
        held = self._held(job)
        if held is not None:
            return held
        done = self._store.cancel_running(job.job_id, job.attempts, time.time())
        return self._end(job, JobStatus.CANCELLED.value if done else "lost")

    def _held(self, job: Job) -> str | None:
        """None while this run may still end the job as it wants; else how it
        ended: lost to another replica, or cancelled as asked."""
        with self._lock:
            running = self._running.get(job.job_id)
        if running is not None and running.lost:
            return self._end(job, "lost")
        if running is not None and running.cancel_requested:
            done = self._store.cancel_running(job.job_id, job.attempts, time.time())
            return self._end(job, JobStatus.CANCELLED.value if done else "lost")
        return None

    def _end(self, job: Job, status: str) -> str:
        with self._lock:
            self._running.pop(job.job_id, None)
        # A lost run leaves the audio: the replica that holds the job now needs it.
        if status != "lost":
            self.files.discard_partial(job.key)
        if self._delete_audio and status != "lost":
            self.files.discard_audio(job.key)
        if status == "lost":
            log.warning("job %s: another replica holds it now; this run's outcome is dropped", job.job_id)
        self._changed(job.job_id)
        return status

    # -- live sessions ----------------------------------------------------

    def start_live(self, request: JobRequest) -> Job:
        """A live transcription session kept as a job: stored processing,
        leased to this replica (the heartbeat renews the lease while the
        session lasts), with no audio file; no worker claims it."""
        job = self._store.add_running(request, self.replica_id, self.lease_seconds, time.time())
        self._start([job])
        job_event(log, "started", job.job_id, model=job.model, live=True)
        return job

    def live_utterance(self, job: Job, segment: Mapping[str, object], result: dict[str, object]) -> None:
        """A live session's utterance, as it completes: appended to the job's
        partial transcript (its followers see it), and the whole result so far
        written, so that a crash keeps every utterance completed before it
        (``reclaim_expired`` completes a job whose result was written)."""
        self.files.write_result(job.key, result, self.min_free_bytes)
        self.segments(job.job_id, [segment])

    def finish_live(
        self, job: Job, result: dict[str, object], language: str | None, recording: Path | None = None
    ) -> str:
        """The session ended: its job completes with every utterance (or ends
        cancelled, if a cancel was asked meanwhile). ``recording``: the
        session's audio (a local WAV, consumed), kept as the client asked:
        not the job's input audio, so its end leaves it; ``expire`` removes it."""
        if recording is not None:
            self.files.keep_recording(job.key, recording)
        duration = result.get("duration")
        if isinstance(duration, int | float):
            self._store.set_duration(job.job_id, float(duration))
        return self.complete(job, result, language)

    # -- cancel -----------------------------------------------------------

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job at once (``"cancelled"``), or ask a running one
        to stop at its next window, on whichever replica runs it
        (``"requested"``); None if it had ended."""
        job = self._store.get(job_id)
        if job is not None and job.status is JobStatus.QUEUED:
            with self._changing():
                cancelled = self._store.cancel_queued(job_id, time.time())
            if cancelled:
                self.files.discard_audio(job.key)
                self._changed(job_id)
                return JobStatus.CANCELLED.value
        if self._store.request_cancel(job_id):  # queued a moment ago, started since
            with self._lock:
                if (running := self._running.get(job_id)) is not None:
                    running.cancel_requested = True
            self._changed(job_id)
            return "requested"
        return None

    # -- recovery and expiry ---------------------------------------------

    def recover(self) -> list[str]:
        """Start-up, before the worker runs. The only process on its database
        (SQLite) knows that every claim still held is a dead process's, and
        that every file nobody owns is litter; replicas settle only expired
        leases and old litter, never a live replica's jobs or files."""
        if not self.shared:
            with self._changing():
                self._store.release_leases()
        again = self.reclaim_expired()
        grace = ORPHAN_GRACE_SECONDS if self.shared else 0.0
        if self._delete_audio:
            # Audio of ended jobs, or of uploads that died before their job was stored.
            live = self._store.active_keys()
            self.files.sweep_audio(live, grace)
        self.files.sweep_incoming(grace)
        return again

    def reclaim_expired(self) -> list[str]:
        """Settle runs whose lease ran out: a transcript fully written
        completes now; a cancelled run ends cancelled; a run started
        ``MAX_ATTEMPTS`` times fails; any other is queued again in its old
        place. Returns the ids that will run again."""
        again = []
        for job in self._store.expired():
            if self.files.has_result(job.key):  # died after writing the transcript: it is done
                result = self.files.read_result(job.key) or {}
                ended = JobStatus.COMPLETED.value
                settled = self._store.complete(job.job_id, job.attempts, time.time(), result.get("language"))  # type: ignore[arg-type]
            elif job.cancel_requested:
                ended = JobStatus.CANCELLED.value
                settled = self._store.cancel_running(job.job_id, job.attempts, time.time())
            elif job.attempts >= MAX_ATTEMPTS:
                ended = JobStatus.FAILED.value
                settled = self._store.fail(
                    job.job_id,
                    job.attempts,
                    time.time(),
                    f"The server stopped {job.attempts} times while running this job; giving up.",
                )
            else:
                with self._changing():
                    requeued = self._store.requeue(job.job_id, job.attempts)
                if requeued:
                    again.append(job.job_id)
                continue  # queued again, or settled by another replica meanwhile
            if settled:  # every job's end is one event in some replica's log, this way too
                job_event(log, ended, job.job_id, model=job.model, attempt=job.attempts, recovered=True)
            self.files.discard_partial(job.key)
            if self._delete_audio:
                self.files.discard_audio(job.key)
            self._changed(job.job_id)
        return again

    def expire(self, before: float) -> int:
        """Delete jobs that ended before ``before`` (callbacks settled), with their files."""
        keys = self._store.expire_finished(before)
        for key in keys:
            self.files.discard_partial(key)
            self.files.discard_result(key)
            self.files.discard_recording(key)
            self.files.discard_audio(key)
        return len(keys)

    # -- callbacks --------------------------------------------------------

    def due_callbacks(self, limit: int = 100, lease_seconds: float | None = None) -> list[Job]:
        """Up to ``limit`` ended jobs whose callback is due, each leased to this
        replica for one attempt (for ``lease_seconds``, by default the job lease)."""
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        return self._store.claim_callbacks(self.replica_id, lease, time.time(), limit)

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

    def result(self, job: Job) -> dict[str, object]:
        """A completed job's transcript; ``DataMissing`` (in words, never an
        empty transcript) if storage has none."""
        result = self.files.read_result(job.key)
        if result is None:
            raise DataMissing(
                f"The transcript of job {job.job_id!r} is not in storage: it was removed, or written where "
                "this server does not look (replicas on separate machines need --storage-url). "
                "Submit the file again."
            )
        return result

    def recording(self, job: Job) -> Iterator[bytes]:
        """A job's kept recording (a WAV) in pieces; ``NoRecording`` in words if it kept none."""
        pieces = self.files.read_recording(job.key)
        if pieces is None:
            raise NoRecording(
                f"Job {job.job_id!r} kept no audio: only a live transcription session opened with "
                "?intent=transcription&store=audio keeps its audio (or the recording was removed, or "
                "stored where this server does not look: replicas on separate machines need --storage-url). "
                "Its transcript downloads as usual."
            )
        return pieces


__all__ = ["MAX_ATTEMPTS", "DuplicateJob", "JobCancelled", "JobQueue", "LeaseLost", "Running", "ShuttingDown"]
