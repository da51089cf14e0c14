"""SQLite (WAL) implementation of the job store.

One connection per thread: the event loop's helper threads read while the
inference thread writes, and WAL lets readers proceed during a write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from whisper_mcp.queue.jobs import DuplicateJob, Job, JobPage, JobRequest, JobStatus, UploadRecord
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue.migrations import migrate

_COLUMNS = (
    "job_id, key, status, filename, model, callback_url, audio_sha256, audio_bytes, duration, "
    "options, priority, cached_from, created_at, started_at, finished_at, attempts, error, "
    "detected_language, seq, callback_state, callback_attempts, callback_error, engine"
)
# Ending a job makes its callback due, in the same statement, so a crash can
# never leave an ended job whose callback is forgotten.
_CALLBACK_DUE = "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_next_at = NULL"
# Queue order: priority first, then arrival.
_AHEAD = "status = 'queued' AND (priority < ? OR (priority = ? AND seq < ?))"


def _row_to_job(row: tuple) -> Job:
    values = list(row)
    values[2] = JobStatus(values[2])
    values[9] = TranscribeOptions.from_json(values[9])
    return Job(*values)


class _Database:
    """A SQLite file with one connection per thread, at the current schema
    version (``migrations.migrate`` brings older files up to it)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        # Migrate on a connection of its own, before WAL mode is set: switching
        # the journal mode rewrites the file header, and a database too new
        # for this code must be left exactly as it was.
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            migrate(conn)
        finally:
            conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a job acknowledged to a client survives power loss too.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SQLiteJobStore(_Database):
    def add(self, request: JobRequest, now: float) -> Job:
        cached = request.cached_from is not None
        conn = self._conn()
        try:
            conn.execute(
                "INSERT INTO jobs (job_id, key, status, filename, model, callback_url, audio_sha256,"
                " audio_bytes, duration, options, priority, cached_from, started_at, finished_at,"
                " detected_language, callback_state, engine, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                " (SELECT detected_language FROM jobs WHERE job_id = ?), ?, ?,"
                # Evaluated under the write lock: created_at strictly grows with
                # seq, so sorting by created_at gives the arrival order.
                " MAX(?, COALESCE((SELECT MAX(created_at) FROM jobs), 0) + 1e-6))",
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
                    now,
                ),
            )
        except sqlite3.IntegrityError:
            existing = self.get(request.job_id)
            if existing is None:  # key collision: server-made ids, practically impossible
                raise
            raise DuplicateJob(existing) from None
        job = self.get(request.job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def find_completed(self, audio_sha256: str, model: str, options: TranscribeOptions, engine: str) -> Job | None:
        row = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE audio_sha256 = ? AND model = ? AND options = ? AND engine = ?"
            " AND status = 'completed' ORDER BY seq DESC LIMIT 1",
            (audio_sha256, model, options.to_json(), engine),
        ).fetchone()
        return _row_to_job(row) if row else None

    def claim_next(self, now: float) -> Job | None:
        # One statement, so two workers (or replicas) never claim the same job.
        row = self._conn().execute(
            "UPDATE jobs SET status = 'processing', started_at = ?, attempts = attempts + 1"
            " WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1)"
            f" RETURNING {_COLUMNS}",
            (now,),
        ).fetchone()
        return _row_to_job(row) if row else None

    def queued(self, limit: int) -> list[Job]:
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_job(row) for row in rows]

    def claim(self, job_id: str, now: float) -> Job | None:
        row = self._conn().execute(
            "UPDATE jobs SET status = 'processing', started_at = ?, attempts = attempts + 1"
            f" WHERE job_id = ? AND status = 'queued' RETURNING {_COLUMNS}",
            (now, job_id),
        ).fetchone()
        return _row_to_job(row) if row else None

    def complete(self, job_id: str, now: float, detected_language: str | None) -> None:
        self._conn().execute(
            "UPDATE jobs SET status = 'completed', finished_at = ?, detected_language = ?, error = NULL,"
            f" {_CALLBACK_DUE} WHERE job_id = ? AND status = 'processing'",
            (now, detected_language, job_id),
        )

    def fail(self, job_id: str, now: float, error: str) -> None:
        self._conn().execute(
            f"UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, {_CALLBACK_DUE}"
            " WHERE job_id = ? AND status = 'processing'",
            (now, error, job_id),
        )

    def cancel(self, job_id: str, now: float, *, running: bool) -> bool:
        cursor = self._conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled on request',"
            f" {_CALLBACK_DUE} WHERE job_id = ? AND status = ?",
            (now, job_id, "processing" if running else "queued"),
        )
        return cursor.rowcount == 1

    def list(self, *, status: JobStatus | None, limit: int, offset: int) -> JobPage:
        where, args = ("WHERE status = ?", (status.value,)) if status is not None else ("", ())
        conn = self._conn()
        (total,) = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()
        # Queued jobs in the order they will run, then the rest, newest first.
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY"
            " CASE status WHEN 'processing' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END,"
            " CASE WHEN status = 'queued' THEN priority ELSE 0 END,"
            " CASE WHEN status = 'queued' THEN seq ELSE -seq END LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        jobs = [_row_to_job(r) for r in rows]
        # The page lists queued jobs consecutively in run order: count those
        # ahead of the first, then number the rest.
        queued = [j for j in jobs if j.status is JobStatus.QUEUED]
        first = self.queue_position(queued[0]) if queued else 0
        return JobPage(jobs, int(total), {j.job_id: first + i for i, j in enumerate(queued)})

    def due_callbacks(self, now: float) -> list[Job]:
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE callback_state = 'pending'"
            " AND (callback_next_at IS NULL OR callback_next_at <= ?) ORDER BY finished_at",
            (now,),
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def record_callback(
        self, job_id: str, *, delivered: bool, gave_up: bool, next_attempt_at: float | None, error: str | None
    ) -> None:
        state = "delivered" if delivered else "failed" if gave_up else "pending"
        self._conn().execute(
            "UPDATE jobs SET callback_state = ?, callback_attempts = callback_attempts + 1,"
            " callback_error = ?, callback_next_at = ? WHERE job_id = ?",
            (state, error, next_attempt_at, job_id),
        )

    def next_callback_at(self) -> float | None:
        (at,) = self._conn().execute(
            "SELECT MIN(COALESCE(callback_next_at, 0)) FROM jobs WHERE callback_state = 'pending'"
        ).fetchone()
        return at

    def recover_interrupted(self) -> list[Job]:
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = 'processing' ORDER BY seq"
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def requeue(self, job_id: str) -> None:
        self._conn().execute(
            "UPDATE jobs SET status = 'queued', started_at = NULL WHERE job_id = ? AND status = 'processing'",
            (job_id,),
        )

    def active_keys(self) -> set[str]:
        rows = self._conn().execute("SELECT key FROM jobs WHERE status IN ('queued', 'processing')").fetchall()
        return {key for (key,) in rows}

    def queue_position(self, job: Job) -> int:
        (ahead,) = self._conn().execute(
            f"SELECT COUNT(*) FROM jobs WHERE {_AHEAD}", (job.priority, job.priority, job.seq)
        ).fetchone()
        return int(ahead) + 1

    def count(self, status: JobStatus) -> int:
        (n,) = self._conn().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()
        return int(n)

    def expire_finished(self, before: float) -> list[str]:
        """Delete ended jobs that finished before ``before``; returns their file keys."""
        rows = self._conn().execute(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?"
            " AND COALESCE(callback_state, '') != 'pending' RETURNING key",
            (before,),
        ).fetchall()
        return [key for (key,) in rows]


_UPLOAD_COLUMNS = "upload_id, kind, secret_hash, filename, size, sha256, submission, ranges, state, created_at, expires_at"


def _row_to_upload(row: tuple) -> UploadRecord:
    values = list(row)
    values[7] = [tuple(r) for r in json.loads(values[7])]
    return UploadRecord(*values)


class SQLiteUploadStore(_Database):
    """Chunked uploads and one-time upload URLs, in the same database file."""

    def create(self, record: UploadRecord) -> None:
        self._conn().execute(
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
        row = self._conn().execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        return _row_to_upload(row) if row else None

    def set_ranges(self, upload_id: str, ranges: list[tuple[int, int]], expires_at: float) -> None:
        self._conn().execute(
            "UPDATE uploads SET ranges = ?, expires_at = ? WHERE upload_id = ?",
            (json.dumps(ranges), expires_at, upload_id),
        )

    def claim(self, secret_hash: str, now: float) -> UploadRecord | None:
        """Use a one-time URL: atomically, so two requests never both get it."""
        row = self._conn().execute(
            "UPDATE uploads SET state = 'used' WHERE secret_hash = ? AND state = 'open' AND expires_at > ?"
            f" RETURNING {_UPLOAD_COLUMNS}",
            (secret_hash, now),
        ).fetchone()
        return _row_to_upload(row) if row else None

    def delete(self, upload_id: str) -> None:
        self._conn().execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def expire(self, now: float) -> list[str]:
        """Delete expired uploads (and used URLs); returns their ids."""
        rows = self._conn().execute(
            "DELETE FROM uploads WHERE expires_at <= ? OR state = 'used' RETURNING upload_id", (now,)
        ).fetchall()
        return [upload_id for (upload_id,) in rows]

    def ids(self) -> set[str]:
        return {upload_id for (upload_id,) in self._conn().execute("SELECT upload_id FROM uploads")}
