"""Numbered schema migrations for the job database (``jobs.sqlite3``).

Every schema the job store has had is reached by applying migrations 1..N in
order; the number of the last one applied is kept in ``PRAGMA user_version``.
``migrate()`` runs at start-up, before the store uses the file:

* a new (empty) file gets every migration, so it ends at ``SCHEMA_VERSION``;
* a file with a version runs only the migrations after that version;
* a file written before versions existed (releases up to and including
  87f7d6b left ``user_version`` at 0) is recognised by its columns and
  tables (see ``infer_version``) and continues from that release's version;
* a file whose version is newer than this code raises ``SchemaTooNew`` and is
  left untouched.

``check_schema()`` runs before it on a read-only connection, so a file that
must be refused is refused before anything writes to it: newer than this code,
or lacking a table or column its version has (``UnusableDatabase``: dropped
by hand, or damaged). Every refusal is a ``DatabaseRefused``, whose message is
the one sentence ``serve`` and ``migrate`` print.

All pending migrations run in one ``BEGIN IMMEDIATE`` transaction, which also
re-reads the version, so two processes starting on the same folder never both
migrate, and a failure leaves the file exactly at its old version.

Rules for adding a migration: append a ``Migration`` with the next number and
never edit one that was released (databases out there already ran it). Plain
SQL only; a statement may not rely on state the file could lack at that
version.

Storage files (``audio/<key>``, ``results/<key>.json``, ``incoming/``,
``uploads/<key>``) have kept the same layout since the first release, so no
migration touches them.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    commit: str  # the release that introduced this schema
    sql: str  # SQLite: one or more statements, separated by ';'
    # PostgreSQL's text of the same change; None for the migrations up to
    # POSTGRES_BASELINE, which no PostgreSQL database ever ran one by one.
    postgres: str | None = None


# The first releases created their tables with "CREATE TABLE IF NOT EXISTS" and
# never changed an existing file, so every schema change broke the folders of
# the release before (e.g. "no such column: priority" on a first-release
# folder). CREATE statements below copy each release's text exactly, so
# sqlite_master reads the same whether a release made the file or a migration
# did (IF NOT EXISTS is not part of the stored text).

MIGRATIONS: tuple[Migration, ...] = (
    # 1. The first release: one jobs table, the queue read by (status, seq).
    Migration(
        1,
        "jobs table",
        "2955c63",
        """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    filename TEXT,
    model TEXT NOT NULL,
    language TEXT,
    callback_url TEXT,
    audio_sha256 TEXT NOT NULL,
    audio_bytes INTEGER NOT NULL,
    duration REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    detected_language TEXT
);
CREATE INDEX jobs_by_status ON jobs (status, seq);
""",
    ),
    # 2. Callbacks are delivered, with their state kept per job so a restart
    #    neither loses nor repeats one.
    #    Data: the first release accepted callback_url but never sent anything.
    #    Its ended jobs would otherwise show "waiting for the job to end"
    #    forever, and marking them 'pending' would POST results of jobs that
    #    may have ended long ago to URLs nobody may be listening on. They are
    #    recorded as not delivered, saying why. Its queued and interrupted jobs
    #    keep no state: when they end, the store makes their callback due, so
    #    the callback the client asked for is sent then.
    Migration(
        2,
        "callback delivery state",
        "9f72218",
        """
ALTER TABLE jobs ADD COLUMN callback_state TEXT;
ALTER TABLE jobs ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN callback_error TEXT;
ALTER TABLE jobs ADD COLUMN callback_next_at REAL;
CREATE INDEX jobs_by_callback ON jobs (callback_state, callback_next_at);
UPDATE jobs SET callback_state = 'failed',
    callback_error = 'not sent: this job ended under a whisper-mcp release that did not send callbacks'
    WHERE callback_url IS NOT NULL AND status IN ('completed', 'failed');
""",
    ),
    # 3. Decoding options, priorities and the transcript cache. The language
    #    column is folded into the options JSON (NOT NULL, no default), so the
    #    table is rebuilt: renamed away, created anew, copied, dropped.
    #    Data: options is the exact TranscribeOptions.to_json() text of what the
    #    old release did (its language, everything else at the defaults it used:
    #    transcribe, fallback temperatures, greedy, no word timings), so the
    #    cache key of those jobs means what it says. Old jobs get priority
    #    normal (1) and keep seq, hence their place in the queue and their
    #    AUTOINCREMENT counter.
    Migration(
        3,
        "options, priority and cache columns; language moves into options",
        "a7a526e",
        """
ALTER TABLE jobs RENAME TO jobs_before_v3;
DROP INDEX jobs_by_status;
DROP INDEX jobs_by_callback;
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    filename TEXT,
    model TEXT NOT NULL,
    callback_url TEXT,
    audio_sha256 TEXT NOT NULL,
    audio_bytes INTEGER NOT NULL,
    duration REAL NOT NULL,
    options TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    cached_from TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    detected_language TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_error TEXT,
    callback_next_at REAL
);
INSERT INTO jobs (
    seq, job_id, key, status, filename, model, callback_url, audio_sha256, audio_bytes, duration,
    options, priority, cached_from, created_at, started_at, finished_at, attempts, error,
    detected_language, callback_state, callback_attempts, callback_error, callback_next_at
)
SELECT
    seq, job_id, key, status, filename, model, callback_url, audio_sha256, audio_bytes, duration,
    '{"beam_size": null, "initial_prompt": null, "language": '
        || CASE WHEN language IS NULL THEN 'null' ELSE json_quote(language) END
        || ', "task": "transcribe", "temperature": null, "word_timestamps": false}',
    1, NULL, created_at, started_at, finished_at, attempts, error,
    detected_language, callback_state, callback_attempts, callback_error, callback_next_at
FROM jobs_before_v3 ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'jobs';
INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', seq FROM sqlite_sequence WHERE name = 'jobs_before_v3';
DROP TABLE jobs_before_v3;
CREATE INDEX jobs_by_queue ON jobs (status, priority, seq);
CREATE INDEX jobs_by_audio ON jobs (audio_sha256, model, options, status);
CREATE INDEX jobs_by_callback ON jobs (callback_state, callback_next_at);
""",
    ),
    # 4. Chunked uploads and one-time upload URLs, in the same file.
    #    IF NOT EXISTS: releases from this one on created this table in a
    #    second script after the jobs table, so a folder may hold it while its
    #    jobs table is older; the table has never changed, so keep it.
    Migration(
        4,
        "uploads table",
        "f37c02a",
        """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    secret_hash TEXT UNIQUE,
    filename TEXT,
    size INTEGER,
    sha256 TEXT,
    submission TEXT,
    ranges TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'open',
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
""",
    ),
    # 5. The transcript cache is keyed by engine and compute type too
    #    ("openai/float32", "ctranslate2/int8", ...).
    #    Data: none; jobs from before keep engine ''. Those releases ran only
    #    openai-whisper, but with float16 on CUDA and float32 on CPU, and the
    #    file does not say which device a job ran on. Filling in
    #    'openai/float32' would let a CPU server hand out a float16 transcript
    #    as its own (and stamp that engine on every cached copy of it); ''
    #    matches no engine, so such audio is transcribed once more instead.
    #    The 928939f release did the same with these rows.
    Migration(
        5,
        "engine in the cache key",
        "928939f",
        """
ALTER TABLE jobs ADD COLUMN engine TEXT NOT NULL DEFAULT '';
""",
    ),
    # 6. Claims become leases, so several replicas can share one queue: the
    #    replica holding a job and until when (by the database's clock, renewed
    #    by a heartbeat); progress and a cancel request live in the row, so any
    #    replica answers status and a cancel reaches the replica running the
    #    job, and survives a restart. Callback deliveries are leased too.
    #    Data: none. Jobs left processing by an older release have no lease,
    #    which counts as expired: they are recovered as before.
    Migration(
        6,
        "leases, progress and cancel requests in the row",
        "this release",
        """
ALTER TABLE jobs ADD COLUMN progress REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at REAL;
ALTER TABLE jobs ADD COLUMN callback_owner TEXT;
ALTER TABLE jobs ADD COLUMN callback_lease_until REAL;
CREATE INDEX jobs_by_lease ON jobs (status, lease_expires_at);
""",
        """
ALTER TABLE jobs ADD COLUMN progress DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN callback_owner TEXT;
ALTER TABLE jobs ADD COLUMN callback_lease_until DOUBLE PRECISION;
CREATE INDEX jobs_by_lease ON jobs (status, lease_expires_at);
""",
    ),
    # 7. A job may be sent as a URL that its run fetches: the URL, as the
    #    client gave it, until then (the audio facts stay empty).
    #    Data: none; every earlier job was sent as bytes (NULL).
    Migration(
        7,
        "audio_url column",
        "this release",
        """
ALTER TABLE jobs ADD COLUMN audio_url TEXT;
""",
        """
ALTER TABLE jobs ADD COLUMN audio_url TEXT;
""",
    ),
    # 8. Realtime client secrets (POST /v1/realtime/client_secrets): short-lived,
    #    single-use, in the database so a browser may open its WebSocket on any
    #    replica. Only a hash of each secret is kept; ``session`` is the
    #    session configuration (JSON) the secret carries.
    #    Data: none; a new table.
    Migration(
        8,
        "realtime client secrets",
        "this release",
        """
CREATE TABLE client_secrets (
    secret_hash TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
""",
        """
CREATE TABLE client_secrets (
    secret_hash TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
""",
    ),
)

# Our tables, whose columns start-up checks against the file's version.
TABLES = ("jobs", "uploads", "client_secrets")

# PostgreSQL support arrived with schema 6: a new PostgreSQL database gets the
# schema of version 5 at once (the tables as SQLite has them after migrations
# 1-5, in PostgreSQL's types), then every migration from 6 on, in its
# ``postgres`` text.
POSTGRES_BASELINE = 5
POSTGRES_BASELINE_SQL = """
CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    filename TEXT,
    model TEXT NOT NULL,
    callback_url TEXT,
    audio_sha256 TEXT NOT NULL,
    audio_bytes BIGINT NOT NULL,
    duration DOUBLE PRECISION NOT NULL,
    options TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    cached_from TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    detected_language TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_error TEXT,
    callback_next_at DOUBLE PRECISION,
    engine TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_by_queue ON jobs (status, priority, seq);
CREATE INDEX jobs_by_audio ON jobs (audio_sha256, model, options, status);
CREATE INDEX jobs_by_callback ON jobs (callback_state, callback_next_at);
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    secret_hash TEXT UNIQUE,
    filename TEXT,
    size BIGINT,
    sha256 TEXT,
    submission TEXT,
    ranges TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'open',
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
assert all(m.postgres for m in MIGRATIONS[POSTGRES_BASELINE:])


class DatabaseRefused(Exception):
    """The job database cannot be used as it is: start-up stops with this
    message (one sentence: what is wrong, what to do), the database unchanged."""


class SchemaTooNew(DatabaseRefused):
    """The database was written by a newer whisper-mcp; nothing was changed."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"The job database {path} has schema version {found}, but this whisper-mcp supports schema "
            f"versions up to {supported}: a newer whisper-mcp wrote it. Upgrade whisper-mcp, or use another "
            "database (--storage folder or --database-url). The database was not changed."
        )


class UnrecognizedSchema(DatabaseRefused):
    """A database without a version whose tables match no whisper-mcp release."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"The job database {path} has no schema version and its tables match no whisper-mcp release "
            f"({detail}); it was not made by whisper-mcp or was changed by hand. Use another --storage "
            "folder. The database was not changed."
        )


class UnusableDatabase(DatabaseRefused):
    """A database that is damaged, unreadable, read-only or out of reach."""

    def __init__(self, path: str, problem: str, remedy: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"The job database {path} {problem}: {remedy} (nothing was changed).")


# What to do with a database that is damaged or lacks a table.
RESTORE = (
    "restore it from a backup, or move it away (with its -wal and -shm files) so that whisper-mcp starts an empty one"
)


def in_words(exc: BaseException) -> str:
    """An error's own words for a refusal: one line, short. libpq's indented
    hints ("Is the server running…?") are left out: the remedy says it."""
    lines = (getattr(exc, "strerror", None) or str(exc)).splitlines() or [""]
    text = "; ".join(" ".join(line.split()) for line in lines[:1] + [x for x in lines[1:] if x[:1].strip()])
    return text if len(text) <= 300 else text[:299] + "…"


def check_tables(path: str, version: int, columns: dict[str, tuple[str, ...]]) -> None:
    """Refuse a database at ``version`` that lacks a table or column of that
    version (``columns``: each of our tables it has, with its columns): a
    table dropped by hand would otherwise start and fail on every request."""
    expected = _reference(version)[0] if version else {}
    missing = [table for table in expected if table not in columns]
    if missing:
        tables = " and ".join(missing)
        raise UnusableDatabase(path, f"has schema version {version} but no {tables} table", RESTORE)
    for table, names in expected.items():
        lacking = [name for name in names if name not in columns[table]]
        if lacking:
            raise UnusableDatabase(
                path, f"has schema version {version} but its {table} table lacks {', '.join(lacking)}", RESTORE
            )


def statements(sql: str) -> list[str]:
    """Split a migration's SQL into statements (';' inside quotes is kept)."""
    out: list[str] = []
    current = ""
    for piece in sql.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                out.append(current.strip())
            current = ""
    if current.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement: {current!r}")
    return out


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``SCHEMA_VERSION``; returns the version it is at.

    ``conn`` must not be inside a transaction; migrate manages BEGIN/COMMIT
    itself (the store's connections are in autocommit mode). Raises
    ``SchemaTooNew`` or ``UnrecognizedSchema`` without changing the file.
    """
    if conn.in_transaction:
        raise RuntimeError("migrate() needs a connection outside a transaction")
    # The usual start-up: already current, no write lock needed.
    version = _user_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(_path(conn), version, SCHEMA_VERSION)

    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated
        # (or a newer one written) since the first look.
        found = _user_version(conn)
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(_path(conn), found, SCHEMA_VERSION)
        version = found if found else _adopt_unversioned(conn)
        for migration in MIGRATIONS[version:]:
            for statement in statements(migration.sql):
                conn.execute(statement)
        if found != SCHEMA_VERSION:  # else another process migrated meanwhile: nothing to write
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def check_schema(conn: sqlite3.Connection) -> None:
    """Refuse, without writing, a file ``migrate`` must not touch: newer than
    this code, or missing a table or column of its version, or unversioned
    with tables of no release. ``conn`` may be read-only."""
    version = _user_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(_path(conn), version, SCHEMA_VERSION)
    if version:
        check_tables(_path(conn), version, _columns(conn))
    else:
        _infer(_path(conn), _columns(conn))


def infer_version(conn: sqlite3.Connection) -> int:
    """Which release's schema an unversioned database has: 0 for none (empty).

    The jobs table's column names, in order, differ from each schema to the
    next except between versions 3 and 4, where the uploads table tells them
    apart. Raises ``UnrecognizedSchema`` if they match no release.
    """
    return _infer(_path(conn), _columns(conn))


# -- internals --------------------------------------------------------------


def _user_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _path(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return file or ":memory:"
    return "?"


def _columns(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """Column names of each of our tables (``TABLES``) the file has."""
    tables = {}
    for table in TABLES:
        cols = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
        if cols:
            tables[table] = cols
    return tables


def _objects(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """Named tables and indexes made by CREATE statements: name -> (type, sql)."""
    rows = conn.execute(
        "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'index')"
        " AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    )
    return {name: (kind, sql) for name, kind, sql in rows}


@functools.cache
def _reference(version: int) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, str]]]:
    """Columns and objects of a database built by migrations 1..version."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for migration in MIGRATIONS[:version]:
            for statement in statements(migration.sql):
                conn.execute(statement)
        return _columns(conn), _objects(conn)
    finally:
        conn.close()


def _infer(path: str, columns: dict[str, tuple[str, ...]]) -> int:
    uploads = columns.get("uploads")
    if uploads is not None and uploads != _reference(SCHEMA_VERSION)[0]["uploads"]:
        raise UnrecognizedSchema(path, f"uploads columns {', '.join(uploads)}")
    jobs = columns.get("jobs")
    if jobs is None:
        return 0  # nothing of ours yet (an uploads table alone is kept by migration 4)
    matches = [v for v in range(SCHEMA_VERSION, 0, -1) if _reference(v)[0].get("jobs") == jobs]
    if not matches:
        raise UnrecognizedSchema(path, f"jobs columns {', '.join(jobs)}")
    for version in matches:  # newest first: 4 before 3 when the uploads table is there
        if "uploads" not in _reference(version)[0] or uploads is not None:
            return version
    return matches[0]


def _adopt_unversioned(conn: sqlite3.Connection) -> int:
    """Version of a file from before versions existed; fills in what it lacks.

    Those releases created tables and indexes with separate autocommitted
    statements ("IF NOT EXISTS", on every start), so a process that died at
    the wrong moment could leave one missing, and the next start of the same
    release would have added it. Any table or index of the inferred version
    that the file lacks is created here, from that version's own SQL.
    """
    version = _infer(_path(conn), _columns(conn))
    if version == 0:
        return 0
    have = _objects(conn)
    for name, (_kind, sql) in _reference(version)[1].items():
        if name not in have:
            conn.execute(sql)
    return version
