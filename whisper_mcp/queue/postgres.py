"""PostgreSQL: the shared database that lets N replicas serve one queue.

``--database-url postgresql://…`` selects it. Claims pick their row with
``FOR UPDATE SKIP LOCKED``; leases use the database's clock; every change is
announced with ``NOTIFY``, and each replica ``LISTEN``s, so a waiter on one
replica wakes within a moment of a job ending on another. Migrations run
under an advisory lock, so replicas starting together never race.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from whisper_mcp.errors import DatabaseUnavailable
from whisper_mcp.queue.breaker import Breaker
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
# While the database is away, it is probed this often.
PROBE_INTERVAL = 0.5
# A connection attempt gives up after this long (psycopg's shortest), so
# one to a database that hangs fails in seconds, not minutes.
CONNECT_TIMEOUT = 2
# A probe not answered within this long fails: a database that hangs is
# noticed in about a second.
PROBE_SECONDS = 0.75
# The longest a call waits for a pooled connection: calls take milliseconds,
# so a longer wait means the database hangs or is away.
POOL_TIMEOUT = 1.0
# A call running longer than this has the watch probe the database: it may hang.
STALL_SECONDS = 0.5


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
        self._pool_size = pool_size
        self._pool = self._new_pool()
        self._closed = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self._listener: threading.Thread | None = None
        self._listen_conn: psycopg.Connection | None = None
        # The calls running now (when each started, on which connection): the
        # watch probes the database when one runs too long, and cuts them
        # all off when an outage starts, so none waits on a dead socket.
        self._calls: dict[int, tuple[float, psycopg.Connection]] = {}
        self._calls_lock = threading.Lock()
        self._call_ids = itertools.count()
        self._probing: threading.Thread | None = None
        self._probe_outcome: list[BaseException | None] = []
        self.breaker = Breaker(_where(url), self._probe, on_down=self._drop_connections, on_up=self._reopen)
        self._watch = threading.Thread(target=self._watch_loop, name="pg-watch", daemon=True)
        self._watch.start()

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            open=True,
            name="whisper-mcp",
        )

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
        with self._connection() as conn:
            return _execute(conn, sql, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Callable[[str, Sequence[Any]], tuple[Rows, int]]]:
        with self._connection() as conn, conn.transaction():

            def run(sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
                return _execute(conn, sql, params)

            yield run

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for one call; ``DatabaseUnavailable`` at once
        while the database is away, or when the call finds it gone."""
        self.breaker.check()
        pool = self._pool
        try:
            conn = pool.getconn()
            if _ended(conn):  # the server ended it while idle (it restarted, or is stopping): the others too
                self.breaker.suspect()
                pool.putconn(conn)
                pool.drain()
                conn = pool.getconn()
        except psycopg.OperationalError as exc:  # none in time, or the pool closed by an outage
            raise self._unavailable(exc) from None
        key = next(self._call_ids)
        with self._calls_lock:
            self._calls[key] = (time.monotonic(), conn)
        try:
            yield conn
        except psycopg.Error as exc:
            if conn.broken or conn.closed:  # the connection failed, not the statement
                raise self._unavailable(exc) from None
            raise
        finally:
            with self._calls_lock:
                del self._calls[key]
            pool.putconn(conn)

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        log.debug("a call to the job database failed: %s", exc)
        self.breaker.suspect()
        return DatabaseUnavailable()

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def notify(self, job_id: str) -> None:
        self.run("SELECT pg_notify(?, ?)", (CHANNEL, job_id))

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
            self._listener.start()

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        self.breaker.on_change(callback)

    def wait_available(self, timeout: float) -> bool:
        return self.breaker.wait_up(timeout)

    def _listen(self) -> None:
        """One connection that LISTENs; connects again once the database is
        back. What changed while it was away is unknown: listeners then hear
        an empty job id (anything may have changed)."""
        connected_before = failing = False
        while not self._closed.is_set():
            if not self.breaker.wait_up(PROBE_INTERVAL):
                continue
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listen_conn = conn
                    if failing:
                        log.info("listening for other replicas' changes again")
                    failing = False
                    if connected_before:
                        self._tell("")
                    connected_before = True
                    while not self._closed.is_set():
                        # A timeout, so close() is noticed.
                        for note in conn.notifies(timeout=1.0):
                            self._tell(note.payload)
            except Exception as exc:  # the database is away or restarted, the network blinked
                if self._closed.is_set():
                    return
                # The watch's probe tells an outage (logged there) from a failure of this connection alone.
                self.breaker.suspect()
                self._closed.wait(PROBE_SECONDS + PROBE_INTERVAL)
                if self.breaker.up and not failing:
                    log.warning("lost the LISTEN connection (%s); connecting again", " ".join(str(exc).split()))
                    failing = True
            finally:
                self._listen_conn = None

    def _tell(self, job_id: str) -> None:
        for callback in self._listeners:
            try:
                callback(job_id)
            except Exception:  # a listener's bug must not end the listening
                log.exception("a listener of job changes failed")

    # -- the watch: outages and their end ------------------------------------

    def _watch_loop(self) -> None:
        while not self._closed.is_set():
            self.breaker.wait_for_news(PROBE_INTERVAL)
            if self._closed.is_set():
                return
            try:
                self.breaker.step(stalled=self._stalled())
            except Exception:  # never end the watch: without it an outage would never end
                log.exception("the job database's watch failed")

    def _stalled(self) -> bool:
        """Whether a call has run so long that the database may hang."""
        cutoff = time.monotonic() - STALL_SECONDS
        with self._calls_lock:
            return any(started < cutoff for started, _ in self._calls.values())

    def _probe(self) -> None:
        """One connection and ``SELECT 1``, answered within PROBE_SECONDS
        (psycopg's connect timeout is 2 s at least): on a thread of its
        own, which a probe that hangs keeps until its timeout; the next
        probe waits for it rather than starting another."""
        if self._probing is None or not self._probing.is_alive():
            outcome: list[BaseException | None] = []

            def attempt() -> None:
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                        conn.execute("SELECT 1")
                except Exception as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)

            self._probing, self._probe_outcome = threading.Thread(target=attempt, name="pg-probe", daemon=True), outcome
            self._probing.start()
        self._probing.join(PROBE_SECONDS)
        if self._probing.is_alive():
            raise TimeoutError(f"no answer within {PROBE_SECONDS:g} s")
        if self._probe_outcome and self._probe_outcome[0] is not None:
            raise self._probe_outcome[0]

    def _drop_connections(self) -> None:
        """An outage started: cut off the calls waiting on the database and
        the LISTEN connection (a database that hangs would hold them), and
        close the pool, whose own reconnecting would back off for minutes."""
        with self._calls_lock:
            conns = [conn for _, conn in self._calls.values()]
        if self._listen_conn is not None:
            conns.append(self._listen_conn)
        for conn in conns:
            _cut(conn)
        pool = self._pool
        # In a thread: closing waits for the pool's workers, which may wait on a connect.
        threading.Thread(target=pool.close, kwargs={"timeout": 5.0}, name="pg-pool-close", daemon=True).start()

    def _reopen(self) -> None:
        """The database answers again: a fresh pool, before calls are let through."""
        self._pool = self._new_pool()

    def close(self) -> None:
        self._closed.set()
        self.breaker.suspect()  # wakes the watch, which sees the close
        self._pool.close()


def _ended(conn: psycopg.Connection) -> bool:
    """Whether an idle pooled connection is dead: closed, or the server sent
    on it while nobody asked (its notice that it ends the connection)."""
    if conn.closed or conn.broken:
        return True
    try:
        poll = select.poll()
        poll.register(conn.fileno(), select.POLLIN)
        if not poll.poll(0):
            return False
        conn.execute("")  # reads what was sent: an error if the connection has ended
    except (OSError, ValueError, psycopg.Error):
        return True
    return False


def _cut(conn: psycopg.Connection) -> None:
    """Shut a connection's socket from another thread: a call waiting on it
    fails at once (closing the connection itself would race with that call)."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, psycopg.Error):
        pass  # closed already


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
