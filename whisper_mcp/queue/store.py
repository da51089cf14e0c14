"""The queue's SQL: one store for both databases (SQLite, PostgreSQL).

Every change is one statement (``UPDATE … RETURNING``), so two threads, or
two replicas, never both claim a job or both end it. A claim holds a lease
(``lease_owner``, ``lease_expires_at`` by the database's clock); ending a run
and reporting progress are fenced by the attempt number, so a replica whose
lease was taken over cannot overwrite the new owner's result.

The databases differ only in what ``Database`` (``sqlite.py``,
``postgres.py``) supplies: connections, placeholders, the clock expression
and row locking. Every method blocks.
"""

from __future__ import annotations

import builtins  # the list method below hides the builtin in this class
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue.jobs import DuplicateJob, Job, JobPage, JobRequest, JobStatus, UploadRecord

Rows = list[tuple[Any, ...]]


class Database(Protocol):
    """What the store needs of a database. SQL is written with ``?`` placeholders."""

    # SQL for the database's clock in seconds since the epoch: leases use it,
    # never a host's clock, so replicas on skewed hosts agree.
    now: str
    # Appended to the SELECT that picks a job to claim: PostgreSQL's
    # FOR UPDATE SKIP LOCKED (SQLite serialises writers anyway).
    skip_locked: str
    # Appended to a SELECT in a transaction that will update the row it reads:
    # PostgreSQL's FOR UPDATE (wait for the row); SQLite's BEGIN IMMEDIATE locks already.
    for_update: str
    # The larger of two values: MAX(a, b) in SQLite, GREATEST(a, b) in PostgreSQL.
    greatest: str
    # Whether this database serves one process (SQLite) or several replicas.
    shared: bool

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
        """Run one statement in its own transaction; its rows and rowcount."""

    def transaction(self) -> AbstractContextManager[Callable[[str, Sequence[Any]], tuple[Rows, int]]]:
        """Several statements in one transaction, rows locked as they are read."""

    def is_unique_violation(self, exc: BaseException) -> bool: ...

    def notify(self, job_id: str) -> None:
        """Tell every replica's listeners that this job changed (no-op for one process)."""

    def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job_id)`` for changes made by other replicas."""

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(False)`` when the database can no longer be reached,
        ``callback(True)`` when it is back (never, for SQLite)."""

    def wait_available(self, timeout: float) -> bool:
        """Whether the database can be reached, waiting up to ``timeout`` seconds for it."""

    def close(self) -> None: ...


_COLUMNS = (
    "job_id, key, status, filename, model, callback_url, audio_sha256, audio_bytes, duration, "
    "options, priority, cached_from, created_at, started_at, finished_at, attempts, error, "
    "detected_language, seq, callback_state, callback_attempts, callback_error, engine, "
    "progress, cancel_requested, lease_owner, lease_expires_at, audio_url"
)
# Ending a job makes its callback due, in the same statement, so a crash can
# never leave an ended job whose callback is forgotten.
_CALLBACK_DUE = "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_next_at = NULL"
_UNLEASED = "lease_owner = NULL, lease_expires_at = NULL"
# Queue order: priority first, then arrival.
_AHEAD = "status = 'queued' AND (priority < ? OR (priority = ? AND seq < ?))"
# A run that still holds its claim: fencing for progress and the end of a run.
_HELD = "job_id = ? AND status = 'processing' AND attempts = ?"


def _row_to_job(row: Sequence[Any]) -> Job:
    values = list(row)
    values[2] = JobStatus(values[2])
    values[9] = TranscribeOptions.from_json(values[9])
    values[24] = bool(values[24])
    return Job(*values)


class SQLJobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Job | None:
        rows, _ = self.db.run(sql, params)
        return _row_to_job(rows[0]) if rows else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Job]:
        rows, _ = self.db.run(sql, params)
        return [_row_to_job(row) for row in rows]

    def _changed(self, job_id: str, count: int) -> bool:
        if count:
            self.db.notify(job_id)
        return count > 0

    # -- enqueue ----------------------------------------------------------

    def add(self, request: JobRequest, now: float) -> Job:
        """Insert a queued job (completed, if ``cached_from``); raises ``DuplicateJob``
        if the id is taken."""
        cached = request.cached_from is not None
        try:
            self.db.run(
                "INSERT INTO jobs (job_id, key, status, filename, model, callback_url, audio_sha256,"
                " audio_bytes, duration, options, priority, cached_from, started_at, finished_at,"
                " detected_language, callback_state, engine, audio_url, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                " (SELECT detected_language FROM jobs WHERE job_id = ?), ?, ?, ?,"
                # Evaluated under the write lock (SQLite): created_at strictly
                # grows with seq, so sorting by created_at gives arrival order.
                f" {self.db.greatest}(?, COALESCE((SELECT MAX(created_at) FROM jobs), 0) + 1e-6))",
                (
                    request.job_id,
                    request.key,
                    (JobStatus.COMPLETED if cached else JobStatus.QUEUED).value,
                    request.filename,
                    request.model,
                    request.callback_url,
                    request.audio_sha256,
                    request.audio_bytes,
                    request.duration,
                    request.options.to_json(),
                    request.priority,
                    request.cached_from,
                    now if cached else None,
                    now if cached else None,
                    request.cached_from,
                    "pending" if cached and request.callback_url else None,
                    request.engine,
                    request.audio_url,
                    now,
                ),
            )
        except Exception as exc:
            if not self.db.is_unique_violation(exc):
                raise
            existing = self.get(request.job_id)
            if existing is None:  # key collision: server-made ids, practically impossible
                raise
            raise DuplicateJob(existing) from None
        self.db.notify(request.job_id)
        job = self.get(request.job_id)
        assert job is not None
        return job

    def add_running(self, request: JobRequest, owner: str, lease_seconds: float, now: float) -> Job:
        """Insert a job already processing, leased to ``owner``: a live
        session's, which no worker may claim."""
        self.db.run(
            "INSERT INTO jobs (job_id, key, status, filename, model, audio_sha256, audio_bytes, duration,"
            " options, priority, started_at, attempts, lease_owner, lease_expires_at, engine, created_at)"
            f" VALUES (?,?,'processing',?,?,?,?,?,?,?,?,1,?,{self.db.now} + ?,?,"
            f" {self.db.greatest}(?, COALESCE((SELECT MAX(created_at) FROM jobs), 0) + 1e-6))",
            (
                request.job_id,
                request.key,
                request.filename,
                request.model,
                request.audio_sha256,
                request.audio_bytes,
                request.duration,
                request.options.to_json(),
                request.priority,
                now,
                owner,
                lease_seconds,
                request.engine,
                now,
            ),
        )
        self.db.notify(request.job_id)
        job = self.get(request.job_id)
        assert job is not None
        return job

    def set_duration(self, job_id: str, duration: float) -> None:
        """A live session's length, known when it ends."""
        self.db.run("UPDATE jobs SET duration = ? WHERE job_id = ?", (duration, job_id))

    def get(self, job_id: str) -> Job | None:
        return self._one(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))

    def find_completed(self, audio_sha256: str, model: str, options: TranscribeOptions, engine: str) -> Job | None:
        """The newest completed job for the same audio, model, options and engine."""
        return self._one(
            f"SELECT {_COLUMNS} FROM jobs WHERE audio_sha256 = ? AND model = ? AND options = ? AND engine = ?"
            " AND status = 'completed' ORDER BY seq DESC LIMIT 1",
            (audio_sha256, model, options.to_json(), engine),
        )

    # -- claims -----------------------------------------------------------

    def claim_next(self, owner: str, lease_seconds: float, now: float) -> Job | None:
        """Move the next queued job (priority, then arrival) to processing,
        leased to ``owner``; one statement, so no job is claimed twice."""
        pick = (
            f"seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1{self.db.skip_locked})"
        )
        return self._claim(pick, (), owner, lease_seconds, now)

    def _claim(self, where: str, args: Sequence[Any], owner: str, lease_seconds: float, now: float) -> Job | None:
        job = self._one(
            "UPDATE jobs SET status = 'processing', started_at = ?, attempts = attempts + 1, progress = 0,"
            f" lease_owner = ?, lease_expires_at = {self.db.now} + ? WHERE {where} RETURNING {_COLUMNS}",
            (now, owner, lease_seconds, *args),
        )
        if job is not None:
            self.db.notify(job.job_id)
        return job

    def queued(self, limit: int) -> list[Job]:
        """The next ``limit`` queued jobs, in the order they will run."""
        return self._all(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT ?", (limit,)
        )

    def claim(self, job_id: str, owner: str, lease_seconds: float, now: float) -> Job | None:
        """Move this queued job to processing; None if it is no longer queued."""
        return self._claim("job_id = ? AND status = 'queued'", (job_id,), owner, lease_seconds, now)

    def renew(self, owner: str, lease_seconds: float, runs: Sequence[tuple[str, int]]) -> dict[str, bool]:
        """Heartbeat: extend the leases of ``runs`` (job id, attempt) that
        ``owner`` still holds; never those of an earlier process that had the
        same name and died. Returns the jobs still held, each with whether a
        cancel was asked."""
        if not runs:
            return {}
        held = " OR ".join(["(job_id = ? AND attempts = ?)"] * len(runs))
        rows, _ = self.db.run(
            f"UPDATE jobs SET lease_expires_at = {self.db.now} + ?"
            f" WHERE lease_owner = ? AND status = 'processing' AND ({held}) RETURNING job_id, cancel_requested",
            (lease_seconds, owner, *(value for run in runs for value in run)),
        )
        return {job_id: bool(flag) for job_id, flag in rows}

    def expired(self) -> list[Job]:
        """Processing jobs whose lease ran out (their replica died or hung)."""
        return self._all(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = 'processing'"
            f" AND (lease_expires_at IS NULL OR lease_expires_at < {self.db.now}) ORDER BY seq"
        )

    def release_leases(self) -> None:
        """Start-up of the only process on this database: every lease still
        held belongs to a process that is gone."""
        self.db.run("UPDATE jobs SET lease_expires_at = NULL WHERE status = 'processing'")

    def requeue(self, job_id: str, attempt: int) -> bool:
        """Put a run whose claim was lost back in the queue, in its old place."""
        _, count = self.db.run(
            f"UPDATE jobs SET status = 'queued', started_at = NULL, progress = 0, {_UNLEASED} WHERE {_HELD}",
            (job_id, attempt),
        )
        return self._changed(job_id, count)

    def release(self, job_id: str, attempt: int) -> bool:
        """Put a run stopped by a graceful shutdown back in the queue, in its
        old place, taking back the attempt its claim counted; not if a cancel
        was asked (``cancel_running`` then). The attempt fences nothing
        afterwards: the releasing run has stopped."""
        _, count = self.db.run(
            "UPDATE jobs SET status = 'queued', started_at = NULL, progress = 0, attempts = attempts - 1,"
            f" {_UNLEASED} WHERE {_HELD} AND cancel_requested = 0",
            (job_id, attempt),
        )
        return self._changed(job_id, count)

    # -- runs -------------------------------------------------------------

    def progress(self, job_id: str, attempt: int, fraction: float) -> bool | None:
        """Record how far a run got; whether a cancel was asked, or None if
        this run no longer holds the job."""
        rows, _ = self.db.run(
            f"UPDATE jobs SET progress = ? WHERE {_HELD} RETURNING cancel_requested", (fraction, job_id, attempt)
        )
        if not rows:
            return None
        self.db.notify(job_id)
        return bool(rows[0][0])

    def fetched(self, job_id: str, attempt: int, sha256: str, size: int, duration: float) -> Job | None:
        """Record the audio a run fetched for a job sent as a URL; None if
        this run no longer holds the job."""
        job = self._one(
            f"UPDATE jobs SET audio_sha256 = ?, audio_bytes = ?, duration = ? WHERE {_HELD} RETURNING {_COLUMNS}",
            (sha256, size, duration, job_id, attempt),
        )
        if job is not None:
            self.db.notify(job_id)
        return job

    def complete(self, job_id: str, attempt: int, now: float, detected_language: str | None) -> bool:
        _, count = self.db.run(
            "UPDATE jobs SET status = 'completed', finished_at = ?, detected_language = ?, error = NULL,"
            f" progress = 1, {_UNLEASED}, {_CALLBACK_DUE} WHERE {_HELD}",
            (now, detected_language, job_id, attempt),
        )
        return self._changed(job_id, count)

    def fail(self, job_id: str, attempt: int, now: float, error: str) -> bool:
        _, count = self.db.run(
            f"UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, {_UNLEASED}, {_CALLBACK_DUE}"
            f" WHERE {_HELD}",
            (now, error, job_id, attempt),
        )
        return self._changed(job_id, count)

    def cancel_running(self, job_id: str, attempt: int, now: float) -> bool:
        """A run stopped on request."""
        _, count = self.db.run(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled on request',"
            f" {_UNLEASED}, {_CALLBACK_DUE} WHERE {_HELD}",
            (now, job_id, attempt),
        )
        return self._changed(job_id, count)

    def cancel_queued(self, job_id: str, now: float) -> bool:
        _, count = self.db.run(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled on request',"
            f" {_CALLBACK_DUE} WHERE job_id = ? AND status = 'queued'",
            (now, job_id),
        )
        return self._changed(job_id, count)

    def request_cancel(self, job_id: str) -> bool:
        """Ask a processing job to stop; whichever replica runs it sees the
        flag at its next progress report or heartbeat. Kept in the database,
        so a restart never runs a cancelled job again."""
        _, count = self.db.run(
            "UPDATE jobs SET cancel_requested = 1 WHERE job_id = ? AND status = 'processing'", (job_id,)
        )
        return self._changed(job_id, count)

    # -- reading ----------------------------------------------------------

    def list(self, *, status: JobStatus | None, limit: int, offset: int) -> JobPage:
        where, args = ("WHERE status = ?", (status.value,)) if status is not None else ("", ())
        (total,) = self.db.run(f"SELECT COUNT(*) FROM jobs {where}", args)[0][0]
        # Queued jobs in the order they will run, then the rest, newest first.
        jobs = self._all(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY"
            " CASE status WHEN 'processing' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END,"
            " CASE WHEN status = 'queued' THEN priority ELSE 0 END,"
            " CASE WHEN status = 'queued' THEN seq ELSE -seq END LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        # The page lists queued jobs consecutively in run order: count those
        # ahead of the first, then number the rest.
        queued = [j for j in jobs if j.status is JobStatus.QUEUED]
        first = self.queue_position(queued[0]) if queued else 0
        return JobPage(jobs, int(total), {j.job_id: first + i for i, j in enumerate(queued)})

    def queue_position(self, job: Job) -> int:
        """1 for the next job to run."""
        rows, _ = self.db.run(f"SELECT COUNT(*) FROM jobs WHERE {_AHEAD}", (job.priority, job.priority, job.seq))
        return int(rows[0][0]) + 1

    def count(self, status: JobStatus) -> int:
        rows, _ = self.db.run("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,))
        return int(rows[0][0])

    def active_keys(self) -> set[str]:
        """File keys of queued and processing jobs: the audio that must be kept."""
        rows, _ = self.db.run("SELECT key FROM jobs WHERE status IN ('queued', 'processing')")
        return {key for (key,) in rows}

    # -- callbacks --------------------------------------------------------

    def claim_callbacks(self, owner: str, lease_seconds: float, now: float, limit: int = 100) -> builtins.list[Job]:
        """Up to ``limit`` ended jobs whose callback is due, leased to ``owner``
        so one replica delivers each attempt."""
        return self._all(
            f"UPDATE jobs SET callback_owner = ?, callback_lease_until = {self.db.now} + ?"
            " WHERE seq IN (SELECT seq FROM jobs WHERE callback_state = 'pending'"
            " AND (callback_next_at IS NULL OR callback_next_at <= ?)"
            f" AND (callback_lease_until IS NULL OR callback_lease_until < {self.db.now})"
            f" ORDER BY finished_at LIMIT ?{self.db.skip_locked}) RETURNING {_COLUMNS}",
            (owner, lease_seconds, now, limit),
        )

    def record_callback(
        self, job_id: str, *, delivered: bool, gave_up: bool, next_attempt_at: float | None, error: str | None
    ) -> None:
        state = "delivered" if delivered else "failed" if gave_up else "pending"
        self.db.run(
            "UPDATE jobs SET callback_state = ?, callback_attempts = callback_attempts + 1,"
            " callback_error = ?, callback_next_at = ?, callback_owner = NULL, callback_lease_until = NULL"
            " WHERE job_id = ?",
            (state, error, next_attempt_at, job_id),
        )

    def next_callback_at(self) -> float | None:
        """When the earliest pending callback is due, if any: not before a
        claim another replica holds on it runs out."""
        rows, _ = self.db.run(
            f"SELECT MIN({self.db.greatest}(COALESCE(callback_next_at, 0), COALESCE(callback_lease_until, 0)))"
            " FROM jobs WHERE callback_state = 'pending'"
        )
        return rows[0][0]

    # -- expiry -----------------------------------------------------------

    def expire_finished(self, before: float) -> builtins.list[str]:
        """Delete ended jobs that finished before ``before`` (callbacks settled); their file keys."""
        rows, _ = self.db.run(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?"
            " AND COALESCE(callback_state, '') != 'pending' RETURNING key",
            (before,),
        )
        return [key for (key,) in rows]

    def close(self) -> None:
        self.db.close()


_UPLOAD_COLUMNS = (
    "upload_id, kind, secret_hash, filename, size, sha256, submission, ranges, state, created_at, expires_at"
)


def _row_to_upload(row: Sequence[Any]) -> UploadRecord:
    values = list(row)
    values[7] = [tuple(r) for r in json.loads(values[7])]
    return UploadRecord(*values)


class SQLUploadStore:
    """Chunked uploads and one-time upload URLs, in the same database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, record: UploadRecord) -> None:
        self.db.run(
            f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.upload_id,
                record.kind,
                record.secret_hash,
                record.filename,
                record.size,
                record.sha256,
                record.submission,
                json.dumps(record.ranges),
                record.state,
                record.created_at,
                record.expires_at,
            ),
        )

    def get(self, upload_id: str) -> UploadRecord | None:
        rows, _ = self.db.run(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,))
        return _row_to_upload(rows[0]) if rows else None

    def add_range(
        self, upload_id: str, start: int, end: int, expires_at: float, merge: Callable[..., list[tuple[int, int]]]
    ) -> list[tuple[int, int]] | None:
        """Record bytes [start, end) as received, merged into the ranges in one
        transaction, so chunks arriving at several replicas at once lose no
        range. The merged ranges, or None if the upload is gone."""
        with self.db.transaction() as run:
            rows, _ = run(f"SELECT ranges FROM uploads WHERE upload_id = ?{self.db.for_update}", (upload_id,))
            if not rows:
                return None
            ranges = merge([tuple(r) for r in json.loads(rows[0][0])], start, end)
            run(
                "UPDATE uploads SET ranges = ?, expires_at = ? WHERE upload_id = ?",
                (json.dumps(ranges), expires_at, upload_id),
            )
            return ranges

    def claim(self, secret_hash: str, now: float) -> UploadRecord | None:
        """Use a one-time URL: atomically, so two requests never both get it."""
        rows, _ = self.db.run(
            "UPDATE uploads SET state = 'used' WHERE secret_hash = ? AND state = 'open' AND expires_at > ?"
            f" RETURNING {_UPLOAD_COLUMNS}",
            (secret_hash, now),
        )
        return _row_to_upload(rows[0]) if rows else None

    def take(self, upload_id: str, now: float) -> bool:
        """Mark an open upload as being submitted, atomically: of two requests
        submitting it (here or on another replica), one gets True."""
        _, count = self.db.run(
            "UPDATE uploads SET state = 'used' WHERE upload_id = ? AND state = 'open' AND expires_at > ?",
            (upload_id, now),
        )
        return count > 0

    def release(self, upload_id: str) -> None:
        """Open again an upload whose submission failed, for a retry until it expires."""
        self.db.run("UPDATE uploads SET state = 'open' WHERE upload_id = ? AND state = 'used'", (upload_id,))

    def delete(self, upload_id: str) -> bool:
        """Remove an upload; False if it was already gone (another request took it)."""
        _, count = self.db.run("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        return count > 0

    def expire(self, now: float) -> list[str]:
        """Delete expired uploads; returns their ids. (A submitted one is deleted
        when its job is queued; one still 'used' is being submitted, or its
        replica died meanwhile: it goes at expiry.)"""
        rows, _ = self.db.run("DELETE FROM uploads WHERE expires_at <= ? RETURNING upload_id", (now,))
        return [upload_id for (upload_id,) in rows]

    def urls(self, now: float) -> list[UploadRecord]:
        """One-time upload URLs that have not expired, open or used."""
        rows, _ = self.db.run(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE kind = 'url' AND expires_at > ?", (now,))
        return [_row_to_upload(row) for row in rows]

    def ids(self) -> set[str]:
        rows, _ = self.db.run("SELECT upload_id FROM uploads")
        return {upload_id for (upload_id,) in rows}

    def close(self) -> None:
        self.db.close()
