"""SQLite (WAL): the embedded database for one process on one machine.

One connection per thread: the event loop's helper threads read while the
inference thread writes, and WAL lets readers proceed during a write.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from whisper_mcp.queue.migrations import migrate
from whisper_mcp.queue.store import Rows, SQLJobStore, SQLUploadStore


class SQLiteDatabase:
    """A SQLite file at the current schema version (``migrations.migrate``
    brings older files up to it)."""

    # Julian day to Unix seconds: SQLite's clock, to the millisecond.
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    for_update = ""
    skip_locked = ""
    greatest = "MAX"
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
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
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a job acknowledged to a client survives power loss too.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
        cursor = self._conn().execute(sql, params)
        rows = cursor.fetchall()
        return rows, cursor.rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Callable[[str, Sequence[Any]], tuple[Rows, int]]]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: read-modify-write is safe
        try:
            yield self.run
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def notify(self, job_id: str) -> None:
        return None  # one process: the queue tells its own listeners

    def listen(self, callback: Callable[[str], None]) -> None:
        return None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SQLiteJobStore(SQLJobStore):
    """The job store on a SQLite file of its own (tests, tools)."""

    def __init__(self, path: Path) -> None:
        super().__init__(SQLiteDatabase(path))


class SQLiteUploadStore(SQLUploadStore):
    def __init__(self, path: Path) -> None:
        super().__init__(SQLiteDatabase(path))
