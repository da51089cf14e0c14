"""PostgreSQL: the shared database that lets N replicas serve one queue.

``--database-url postgresql://…`` selects it. Claims pick their row with
``FOR UPDATE SKIP LOCKED``; leases use the database's clock; every change is
announced with ``NOTIFY``, and each replica ``LISTEN``s, so a waiter on one
replica wakes within a moment of a job ending on another. Migrations run
under an advisory lock, so replicas starting together never race.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from whisper_mcp.queue.migrations import (
    MIGRATIONS,
    POSTGRES_BASELINE,
    POSTGRES_BASELINE_SQL,
    SCHEMA_VERSION,
    TABLES,
    SchemaTooNew,
    UnusableDatabase,
    check_tables,
    in_words,
)
from whisper_mcp.queue.store import Rows

log = logging.getLogger("whisper_mcp.queue.postgres")

CHANNEL = "whisper_mcp_jobs"
# Any fixed number: the advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x77686D63


def _sql(text: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s``."""
    return text.replace("%", "%%").replace("?", "%s")


class PostgresDatabase:
    now = "extract(epoch from clock_timestamp())::double precision"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    greatest = "GREATEST"
    shared = True

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        migrate_postgres(url)
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=True, name="whisper-mcp"
        )
        self._closed = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self._listener: threading.Thread | None = None

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
        with self._pool.connection() as conn:
            return _execute(conn, sql, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Callable[[str, Sequence[Any]], tuple[Rows, int]]]:
        with self._pool.connection() as conn, conn.transaction():

            def run(sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
                return _execute(conn, sql, params)

            yield run

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def notify(self, job_id: str) -> None:
        self.run("SELECT pg_notify(?, ?)", (CHANNEL, job_id))

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        """One connection that LISTENs; reconnects after a failure."""
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closed.is_set():
                        # A timeout, so close() is noticed.
                        for note in conn.notifies(timeout=1.0):
                            for callback in self._listeners:
                                callback(note.payload)
            except Exception:  # the database restarted, the network blinked: listen again
                if self._closed.is_set():
                    return
                log.warning("lost the LISTEN connection; reconnecting", exc_info=True)
                time.sleep(1.0)

    def close(self) -> None:
        self._closed.set()
        self._pool.close()


def _execute(conn: psycopg.Connection, sql: str, params: Sequence[Any]) -> tuple[Rows, int]:
    cursor = conn.execute(_sql(sql), tuple(params))
    rows = cursor.fetchall() if cursor.description is not None else []
    return rows, cursor.rowcount


def migrate_postgres(url: str) -> int:
    """Bring the database to ``SCHEMA_VERSION`` under an advisory lock, in one
    transaction. Raises ``DatabaseRefused``, the database left as it was, when
    it cannot be reached, is newer than this code (``SchemaTooNew``), lacks a
    table of its version, or cannot be migrated."""
    where = _where(url)
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise UnusableDatabase(
            where, f"cannot be reached ({in_words(exc)})", "start PostgreSQL, or correct --database-url"
        ) from None
    with conn:
        try:
            return _migrate(conn, where)
        except psycopg.Error as exc:
            raise UnusableDatabase(
                where,
                f"could not be brought to schema version {SCHEMA_VERSION} ({in_words(exc)})",
                "check that PostgreSQL is up and that this user may create and alter tables there",
            ) from None


def _migrate(conn: psycopg.Connection, where: str) -> int:
    version = _version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(where, version, SCHEMA_VERSION)
    if version:  # before any write: a table dropped by hand stops start-up in words
        check_tables(where, version, _columns(conn))
    if version == SCHEMA_VERSION:
        return version
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS whisper_mcp_schema (version INTEGER NOT NULL)")
        found = _version(conn)  # again, under the lock: another replica may have migrated
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(where, found, SCHEMA_VERSION)
        if found < POSTGRES_BASELINE:
            conn.execute(POSTGRES_BASELINE_SQL)
            found = POSTGRES_BASELINE
        for migration in MIGRATIONS[found:]:
            conn.execute(migration.postgres)  # type: ignore[arg-type]
        conn.execute("DELETE FROM whisper_mcp_schema")
        conn.execute("INSERT INTO whisper_mcp_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


def _columns(conn: psycopg.Connection) -> dict[str, tuple[str, ...]]:
    """Column names of each of our tables (``TABLES``) the database has."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
        (list(TABLES),),
    ).fetchall()
    tables: dict[str, tuple[str, ...]] = {}
    for table, column in rows:
        tables[table] = (*tables.get(table, ()), column)
    return tables


def _version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('whisper_mcp_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT MAX(version) FROM whisper_mcp_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _where(url: str) -> str:
    """The database's address without credentials, for messages."""
    return "PostgreSQL database " + url.split("@", 1)[-1]
