"""SQLite (WAL): the embedded database for one process on one machine.

One connection per thread: the event loop's helper threads read while the
inference thread writes, and WAL lets readers proceed during a write.

Before anything writes to the file, ``check`` reads it: a database that is
damaged, unreadable, a folder, on storage this process cannot write, or
missing a table stops start-up in one sentence, and is left exactly as it was
(a damaged file must not be "repaired" by a checkpoint or a migration).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from whisper_mcp.queue.migrations import (
    RESTORE,
    SCHEMA_VERSION,
    UnusableDatabase,
    check_schema,
    in_words,
    migrate,
)
from whisper_mcp.queue.store import Rows, SQLJobStore, SQLUploadStore

# Up to this size the full integrity_check (every index against its table
# too) takes well under a second; a larger file gets quick_check (every page
# and record, not the indexes' contents).
FULL_CHECK_BYTES = 64 * 2**20
_ACCESS = "give that user read and write access to the file and its folder, or use another --storage folder"


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
        check(path)
        # Migrate on a connection of its own, before WAL mode is set: switching
        # the journal mode rewrites the file header, and a database too new
        # for this code must be left exactly as it was.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            try:
                migrate(conn)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:  # e.g. a disk that filled meanwhile
            raise UnusableDatabase(
                str(path),
                f"could not be brought to schema version {SCHEMA_VERSION} ({in_words(exc)})",
                "make room on its disk and check its permissions",
            ) from exc

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

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        return None  # a file: its faults are each call's own

    def wait_available(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def check(path: Path) -> None:
    """Refuse (``UnusableDatabase``), without creating or changing a file, a
    database the store cannot use. A file not there yet passes if it can be
    created."""
    where = str(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        _check_creatable(path)
        return
    except OSError as exc:  # e.g. a folder on the way this user may not enter
        raise UnusableDatabase(where, f"cannot be read ({in_words(exc)})", _ACCESS) from None
    if stat.S_ISDIR(info.st_mode):
        raise UnusableDatabase(
            where, "is a folder, not a file", "move the folder away, or use another --storage folder"
        )
    if not stat.S_ISREG(info.st_mode):
        raise UnusableDatabase(where, "is not a regular file", "move it away, or use another --storage folder")
    if not os.access(path, os.R_OK):
        raise UnusableDatabase(where, "cannot be read by the user whisper-mcp runs as", _ACCESS)
    # SQLite writes beside the file too (-wal, -shm, -journal).
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            raise _not_writable(path, target)
    _check_contents(path, info.st_size)


def _check_creatable(path: Path) -> None:
    """The nearest folder that exists on the way to ``path`` must be one this
    process can write in."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UnusableDatabase(
            str(path), f"cannot be created because {folder} is a file, not a folder", "use another --storage folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _not_writable(path, folder)


def _not_writable(path: Path, target: Path) -> UnusableDatabase:
    """Why ``target`` (the file, or a folder on its way) cannot be written."""
    try:
        read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return UnusableDatabase(
            str(path), "is on read-only storage", "mount the storage read-write, or use another --storage folder"
        )
    if target == path:
        what = "is read-only"
    elif os.path.lexists(path):
        what = f"is in {target}, which is read-only"
    else:
        what = f"cannot be created in {target}, which is read-only"
    return UnusableDatabase(str(path), f"{what} for the user whisper-mcp runs as", _ACCESS)


def _check_contents(path: Path, size: int) -> None:
    """Read the whole file, read-only: SQLite's own check, then the tables."""
    # With no -wal or -journal beside it the file alone is the database, and
    # immutable=1 reads it without creating the -wal and -shm files that a
    # read-only connection to a WAL database would leave behind. A -wal is
    # read through, read-only (a crash left it, or another process writes).
    # A -journal is a transaction a crash cut short: only a read-write
    # connection may roll it back, SQLite's own recovery of the last commit.
    if os.path.lexists(f"{path}-journal"):
        mode = "mode=rw"
    else:
        mode = "mode=ro" if os.path.lexists(f"{path}-wal") else "immutable=1"
    uri = f"{path.resolve().as_uri()}?{mode}"
    where = str(path)
    pragma = "integrity_check" if size <= FULL_CHECK_BYTES else "quick_check"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            problems = [row[0] for row in conn.execute(f"PRAGMA {pragma}")]
            if problems != ["ok"]:
                raise UnusableDatabase(where, f"is damaged (SQLite's {pragma} found: {problems[0]})", RESTORE)
            check_schema(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise UnusableDatabase(where, f"is damaged (SQLite: {in_words(exc)})", RESTORE) from None
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            raise UnusableDatabase(
                where, f"is locked ({in_words(exc)})", "stop the other program that holds it, then start again"
            ) from None
        raise UnusableDatabase(where, f"cannot be read ({in_words(exc)})", _ACCESS) from None


class SQLiteJobStore(SQLJobStore):
    """The job store on a SQLite file of its own (tests, tools)."""

    def __init__(self, path: Path) -> None:
        super().__init__(SQLiteDatabase(path))


class SQLiteUploadStore(SQLUploadStore):
    def __init__(self, path: Path) -> None:
        super().__init__(SQLiteDatabase(path))
