"""Schema migrations, run on storage folders written by every earlier release.

The folders under tests/fixtures/releases/<commit>/ were made by each
release's own code (see make_releases.py there). Each test copies one to a
temporary folder first.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue import migrations
from whisper_mcp.queue.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseRefused,
    SchemaTooNew,
    UnrecognizedSchema,
    UnusableDatabase,
    check_schema,
    infer_version,
    migrate,
    statements,
)
from whisper_mcp.queue.sqlite import SQLiteDatabase

RELEASES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "releases"
# commit -> the schema version its database has (no release recorded one)
RELEASES = {"2955c63": 1, "9f72218": 2, "a7a526e": 3, "f37c02a": 4, "928939f": 5}
NOT_SENT = "not sent: this job ended under a whisper-mcp release that did not send callbacks"

# Schema 5, as whisper_mcp/store.py (now queue/sqlite.py) created it with
# _SCHEMA + _UPLOAD_SCHEMA from 928939f to 87f7d6b: migrations 1..5 must give
# exactly this. (A later migration changes the schema; this stays version 5.)
SCHEMA_5 = """
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
    callback_next_at REAL,
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
    size INTEGER,
    sha256 TEXT,
    submission TEXT,
    ranges TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'open',
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

release_params = pytest.mark.parametrize("commit", list(RELEASES))


# -- helpers ------------------------------------------------------------------


def connect(path: Path | str) -> sqlite3.Connection:
    """As the store opens the file: autocommit, WAL."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def copy_release(commit: str, tmp_path: Path) -> Path:
    storage = tmp_path / commit
    shutil.copytree(RELEASES_DIR / commit / "storage", storage)
    return storage / "jobs.sqlite3"


def manifest(commit: str) -> dict[str, Any]:
    return json.loads((RELEASES_DIR / commit / "manifest.json").read_text())


def _normalize(sql: str | None) -> str | None:
    """Whitespace and identifier quotes aside (ALTER TABLE ADD COLUMN and
    RENAME rewrite the stored CREATE text), the same statement."""
    if sql is None:
        return None
    text = re.sub(r"\s+", " ", sql.replace('"', ""))
    return re.sub(r"\s*([(),])\s*", r"\1", text).strip()


def schema(conn: sqlite3.Connection) -> dict[str, Any]:
    """Everything about the schema: objects, their normalized SQL, columns
    (type, NOT NULL, default, key), indexes and their columns."""
    objects = {
        name: (kind, table, _normalize(sql))
        for kind, name, table, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    }
    tables = sorted(name for name, (kind, *_rest) in objects.items() if kind == "table")
    columns = {t: conn.execute(f"PRAGMA table_xinfo({t})").fetchall() for t in tables}
    indexes = {
        t: sorted(
            (row[1], row[2], row[3], row[4], conn.execute(f"PRAGMA index_xinfo({row[1]})").fetchall())
            for row in conn.execute(f"PRAGMA index_list({t})")
        )
        for t in tables
    }
    return {"objects": objects, "columns": columns, "indexes": indexes}


def reference(version: int) -> sqlite3.Connection:
    """An in-memory database made by migrations 1..version."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for migration in MIGRATIONS[:version]:
        for statement in statements(migration.sql):
            conn.execute(statement)
    return conn


def from_script(script: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(script)
    return conn


def rows(conn: sqlite3.Connection, table: str, key: str) -> dict[str, dict[str, Any]]:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
        return {}
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    out = {}
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        out[row[key]] = row
    return out


def sequence(conn: sqlite3.Connection) -> int | None:
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
    return None if found is None else found[0]


def expected_after(row: dict[str, Any], version: int) -> dict[str, Any]:
    """A job row of a release with schema ``version``, as the migrations must leave it."""
    row = dict(row)
    if version < 2:
        ended_with_callback = row["callback_url"] is not None and row["status"] in ("completed", "failed")
        row.update(
            callback_state="failed" if ended_with_callback else None,
            callback_attempts=0,
            callback_error=NOT_SENT if ended_with_callback else None,
            callback_next_at=None,
        )
    if version < 3:
        row["options"] = TranscribeOptions(language=row.pop("language")).to_json()
        row.update(priority=1, cached_from=None)
    if version < 5:
        row["engine"] = ""
    if version < 6:
        row.update(
            progress=0.0,
            cancel_requested=0,
            lease_owner=None,
            lease_expires_at=None,
            callback_owner=None,
            callback_lease_until=None,
        )
    if version < 7:
        row["audio_url"] = None
    return row


# -- the migrations themselves -------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert SCHEMA_VERSION == 8
    assert [m.commit for m in MIGRATIONS] == [*RELEASES, "this release", "this release", "this release"]


def test_fresh_database_ends_at_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    conn = connect(path)
    try:
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert not conn.in_transaction
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
    finally:
        conn.close()


def test_migrations_1_to_5_give_the_schema_of_87f7d6b() -> None:
    assert schema(reference(5)) == schema(from_script(SCHEMA_5))


@release_params
def test_each_release_schema_is_its_migration(commit: str, tmp_path: Path) -> None:
    """Migrations 1..v build exactly the schema release v made: the same
    tables, columns, defaults, keys and indexes."""
    conn = connect(copy_release(commit, tmp_path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)  # no release recorded one
        assert schema(conn) == schema(reference(RELEASES[commit]))
    finally:
        conn.close()


@release_params
def test_unversioned_release_is_recognised(commit: str, tmp_path: Path) -> None:
    conn = connect(copy_release(commit, tmp_path))
    try:
        assert infer_version(conn) == RELEASES[commit]
    finally:
        conn.close()


def test_statements_keep_semicolons_inside_strings() -> None:
    sql = "UPDATE t SET a = 'x; y';\nCREATE INDEX i ON t (a);\n"
    assert statements(sql) == ["UPDATE t SET a = 'x; y';", "CREATE INDEX i ON t (a);"]


# -- every release's folder ---------------------------------------------------


@release_params
def test_release_migrates_to_current_schema_with_every_row(commit: str, tmp_path: Path) -> None:
    version = RELEASES[commit]
    conn = connect(copy_release(commit, tmp_path))
    try:
        jobs_before = rows(conn, "jobs", "job_id")
        uploads_before = rows(conn, "uploads", "upload_id")
        sequence_before = sequence(conn)

        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        jobs_after = rows(conn, "jobs", "job_id")
        assert jobs_after == {job_id: expected_after(row, version) for job_id, row in jobs_before.items()}
        assert rows(conn, "uploads", "upload_id") == uploads_before
        # seq values and the AUTOINCREMENT counter survive the table rebuild:
        # a new job still sorts after every old one.
        assert sequence(conn) == sequence_before == max(r["seq"] for r in jobs_after.values())
    finally:
        conn.close()


@release_params
def test_release_rows_mean_what_they_meant(commit: str, tmp_path: Path) -> None:
    """The states the release left, read after migrating: statuses, callbacks,
    options, the cache, uploads."""
    version = RELEASES[commit]
    made = manifest(commit)
    conn = connect(copy_release(commit, tmp_path))
    try:
        migrate(conn)
        jobs = rows(conn, "jobs", "job_id")
    finally:
        conn.close()

    assert {j: r["status"] for j, r in jobs.items()} == {
        j: spec["status_when_killed"] for j, spec in made["jobs"].items()
    }
    for job_id, row in jobs.items():
        TranscribeOptions.from_json(row["options"])  # today's code can read every options value
        assert row["engine"] == ("openai/float32" if version >= 5 else ""), job_id
        assert row["cached_from"] == made["jobs"][job_id].get("cached_from")
    assert (
        TranscribeOptions.from_json(jobs["queued-mp3" if version == 1 else "queued-opus"]["options"]).language == "en"
    )

    if version == 1:
        # Accepted by the first release, never sent: recorded as such, not left
        # "waiting for the job to end", and not sent now either.
        done = jobs["done-short"]
        assert (done["callback_state"], done["callback_error"], done["callback_attempts"]) == ("failed", NOT_SENT, 0)
        assert all(r["callback_state"] is None for j, r in jobs.items() if j != "done-short")
        assert jobs["queued-mp3"]["options"] == TranscribeOptions(language="en").to_json()
        assert jobs["interrupted-opus"]["options"] == TranscribeOptions().to_json()
    else:
        assert jobs["done-delivered"]["callback_state"] == "delivered"
        assert jobs["done-pending"]["callback_state"] == "pending"
        assert jobs["done-pending"]["callback_attempts"] >= 1
        assert jobs["queued-opus"]["callback_state"] is None  # due when it ends
    if version >= 3:
        queued = TranscribeOptions.from_json(jobs["queued-opus"]["options"])
        assert (queued.beam_size, queued.initial_prompt, jobs["queued-opus"]["priority"]) == (2, "Friday report", 2)
        assert jobs["cancelled-queued"]["error"] == "cancelled on request"
    assert jobs["interrupted-opus"]["attempts"] == 1


@release_params
def test_todays_store_reads_the_migrated_folder(commit: str, tmp_path: Path) -> None:
    """The job and upload stores of today's code, on the migrated file:
    every job loads, the queue order, due callbacks, the cache, uploads."""
    store_module = pytest.importorskip("whisper_mcp.queue.sqlite")
    version = RELEASES[commit]
    made = manifest(commit)
    path = copy_release(commit, tmp_path)
    conn = connect(path)
    migrate(conn)
    conn.close()

    jobs = store_module.SQLiteJobStore(path)
    uploads = store_module.SQLiteUploadStore(path)
    try:
        for job_id in made["jobs"]:
            job = jobs.get(job_id)
            assert job is not None and job.status.value == made["jobs"][job_id]["status_when_killed"]
        # Jobs an old release left processing hold no lease: expired, so recovered.
        assert [j.job_id for j in jobs.expired()] == ["interrupted-opus"]
        due = {j.job_id for j in jobs.claim_callbacks("replica-1", 30.0, 4e9)}
        assert due == (set() if version == 1 else {"done-pending"})

        # The cache: today's CPU server asks for engine openai/float32. Rows of
        # releases before 928939f have engine '' and are not reused (the
        # device they ran on is unknown); 928939f's rows are.
        short = jobs.get("done-short" if version == 1 else "done-delivered")
        assert short is not None
        hit = jobs.find_completed(short.audio_sha256, "tiny.en", TranscribeOptions(), "openai/float32")
        if version >= 5:
            assert hit is not None and hit.job_id == "cached-short"
        else:
            assert hit is None
            assert jobs.find_completed(short.audio_sha256, "tiny.en", TranscribeOptions(), "") is not None

        if version >= 4:
            chunked = made["uploads"]["chunked"]
            record = uploads.get(chunked["upload_id"])
            assert record is not None and record.kind == "chunked" and record.state == "open"
            assert [list(r) for r in record.ranges] == chunked["received"]
            assert (tmp_path / commit / "uploads" / chunked["upload_id"]).stat().st_size == chunked["received"][0][1]
            secret = made["uploads"]["url"]["upload_url"].rsplit("/", 1)[1]
            claimed = uploads.claim(hashlib.sha256(secret.encode()).hexdigest(), now=0.0)
            assert claimed is not None and json.loads(claimed.submission)["job_id"] == "from-upload-url"
        else:
            assert uploads.ids() == set()
    finally:
        jobs.close()
        uploads.close()


@release_params
def test_storage_files_are_where_todays_code_looks(commit: str, tmp_path: Path) -> None:
    """Audio of unfinished jobs at audio/<key>, transcripts at results/<key>.json:
    the layout has not changed since the first release."""
    files_module = pytest.importorskip("whisper_mcp.queue.files")
    path = copy_release(commit, tmp_path)
    files = files_module.FileStore(path.parent)
    conn = connect(path)
    try:
        migrate(conn)
        for job_id, row in rows(conn, "jobs", "job_id").items():
            if row["status"] in ("queued", "processing"):
                assert files.audio_path(row["key"]).is_file(), job_id
            if row["status"] == "completed":
                result = files.read_result(row["key"])
                assert result is not None and result["text"], job_id
                assert isinstance(result["segments"], list)
    finally:
        conn.close()


@release_params
def test_migrating_twice_changes_nothing(commit: str, tmp_path: Path) -> None:
    conn = connect(copy_release(commit, tmp_path))
    try:
        migrate(conn)
        dump = list(conn.iterdump())
        changes = conn.total_changes
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.total_changes == changes
        assert list(conn.iterdump()) == dump
    finally:
        conn.close()
    again = connect(tmp_path / commit / "jobs.sqlite3")  # a new process starting
    try:
        assert migrate(again) == SCHEMA_VERSION
        assert list(again.iterdump()) == dump
    finally:
        again.close()


# -- refusing, failing, racing -------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("commit", ["2955c63", "928939f"])
def test_newer_schema_is_refused_untouched(commit: str, tmp_path: Path) -> None:
    path = copy_release(commit, tmp_path)
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    setup.close()
    before = _files(path.parent)

    conn = connect(path)
    try:
        with pytest.raises(SchemaTooNew) as raised:
            migrate(conn)
        assert not conn.in_transaction
    finally:
        conn.close()
    message = str(raised.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message and f"up to {SCHEMA_VERSION}" in message
    assert "Upgrade whisper-mcp" in message and "--storage folder" in message
    assert (raised.value.found, raised.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert _files(path.parent) == before  # not a byte changed


def test_failing_migration_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All pending migrations are one transaction: a failure in the last one
    undoes the first ones too (including the table rebuild of migration 3)."""
    path = copy_release("2955c63", tmp_path)
    conn = connect(path)
    before_schema, before_dump = schema(conn), list(conn.iterdump())
    broken = MIGRATIONS[:-1] + (
        migrations.Migration(5, "broken", "test", MIGRATIONS[-1].sql + "\nINSERT INTO no_such_table VALUES (1);"),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            migrate(conn)
        assert not conn.in_transaction
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        assert schema(conn) == before_schema
        assert list(conn.iterdump()) == before_dump
    finally:
        conn.close()

    monkeypatch.undo()  # fixed: the same file now migrates
    conn = connect(path)
    try:
        assert migrate(conn) == SCHEMA_VERSION
    finally:
        conn.close()


@pytest.mark.parametrize("commit", ["2955c63", "f37c02a"])
def test_two_processes_starting_together_migrate_once(commit: str, tmp_path: Path) -> None:
    path = copy_release(commit, tmp_path)
    conn = connect(path)
    expected = {j: expected_after(r, RELEASES[commit]) for j, r in rows(conn, "jobs", "job_id").items()}
    conn.close()
    start = threading.Barrier(3)
    results: list[object] = []

    def run() -> None:
        conn = connect(path)
        try:
            start.wait()
            results.append(migrate(conn))
        except BaseException as exc:  # reported below
            results.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [SCHEMA_VERSION] * 3
    conn = connect(path)
    try:
        assert rows(conn, "jobs", "job_id") == expected
    finally:
        conn.close()


def test_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)")
    setup.execute("INSERT INTO jobs (name) VALUES ('mine')")
    setup.close()
    before = _files(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(UnrecognizedSchema, match="jobs columns id, name"):
            migrate(conn)
        assert not conn.in_transaction
    finally:
        conn.close()
    assert _files(tmp_path) == before


def test_unversioned_schema_5_missing_its_uploads_table_gets_it(tmp_path: Path) -> None:
    """Before versions, the jobs and uploads tables were created by two
    scripts; a process that died between them left no uploads table, which
    its next start added. So does migrate()."""
    path = tmp_path / "jobs.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.executescript(SCHEMA_5.split("CREATE TABLE uploads")[0])
    setup.close()
    conn = connect(path)
    try:
        assert infer_version(conn) == 5
        assert migrate(conn) == SCHEMA_VERSION
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
    finally:
        conn.close()


def test_unversioned_schema_3_with_uploads_table_is_schema_4(tmp_path: Path) -> None:
    path = copy_release("a7a526e", tmp_path)
    conn = connect(path)
    try:
        conn.execute(MIGRATIONS[3].sql.strip().rstrip(";"))
        assert infer_version(conn) == 4
        assert migrate(conn) == SCHEMA_VERSION
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
    finally:
        conn.close()


def test_missing_index_of_an_unversioned_release_is_created(tmp_path: Path) -> None:
    path = copy_release("928939f", tmp_path)
    conn = connect(path)
    try:
        conn.execute("DROP INDEX jobs_by_audio")
        assert migrate(conn) == SCHEMA_VERSION
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
    finally:
        conn.close()


def test_connection_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "jobs.sqlite3")
    try:
        conn.execute("BEGIN")
        with pytest.raises(RuntimeError, match="outside a transaction"):
            migrate(conn)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.slow  # the real command
def test_serve_refuses_a_newer_database_in_words(tmp_path: Path) -> None:
    """The real command, before any model is loaded: a message, exit status 1,
    and the file untouched."""
    storage = tmp_path / "storage"
    storage.mkdir()
    database = storage / "jobs.sqlite3"
    conn = sqlite3.connect(database)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = database.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "serve", "--storage", str(storage), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"version {SCHEMA_VERSION + 1}" in done.stderr and "Upgrade whisper-mcp" in done.stderr
    assert "Traceback" not in done.stderr
    assert database.read_bytes() == before


# -- a database that cannot be used: refused before anything writes -------------


def current(tmp_path: Path) -> Path:
    """A release's folder brought to today's schema by the store, closed."""
    path = copy_release("928939f", tmp_path)
    SQLiteDatabase(path).close()
    assert not list(path.parent.glob("jobs.sqlite3-*"))
    return path


def test_a_column_dropped_by_hand_is_refused_untouched(tmp_path: Path) -> None:
    path = current(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE jobs DROP COLUMN callback_owner")
    conn.close()
    before = _files(path.parent)
    with pytest.raises(UnusableDatabase, match="its jobs table lacks callback_owner: restore it from a backup"):
        SQLiteDatabase(path)
    assert _files(path.parent) == before


def test_an_index_that_disagrees_with_its_table_is_refused(tmp_path: Path) -> None:
    """Pages and records intact, an index's entries not those of its table:
    what quick_check passes and integrity_check (used up to FULL_CHECK_BYTES) finds."""
    path = current(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, '(status, priority, seq)', '(priority, status, seq)')"
        " WHERE name = 'jobs_by_queue'"
    )
    conn.close()
    before = _files(path.parent)
    with pytest.raises(UnusableDatabase, match=r"is damaged \(SQLite's integrity_check found: row \d+ missing"):
        SQLiteDatabase(path)
    assert _files(path.parent) == before


def test_a_database_in_use_is_checked_through_its_wal(tmp_path: Path) -> None:
    """Another connection has the file open in WAL mode, its last write still
    in the -wal: the check reads through it (read-only) and passes."""
    path = current(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("PRAGMA wal_autocheckpoint=0")
    other.execute("DROP TABLE uploads")  # in the -wal only: the file alone still has it
    assert (path.parent / "jobs.sqlite3-wal").stat().st_size > 0
    try:
        with pytest.raises(UnusableDatabase, match="no uploads table"):
            SQLiteDatabase(path)
    finally:
        other.close()


def test_a_new_database_is_made_in_a_new_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "storage" / "jobs.sqlite3"
    SQLiteDatabase(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_every_refusal_is_a_database_refused() -> None:
    """What ``serve`` and ``migrate`` catch to print the sentence."""
    for refusal in (SchemaTooNew, UnrecognizedSchema, UnusableDatabase):
        assert issubclass(refusal, DatabaseRefused)


@pytest.mark.slow  # runs a program
def test_a_transaction_cut_short_by_a_crash_is_rolled_back_not_refused(tmp_path: Path) -> None:
    """A process died inside a transaction on a file in rollback-journal mode
    (a new file's first migration runs so): its hot -journal is SQLite's to
    roll back, and the file then passes the check with its last commit."""
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA_5)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    code = (
        "import os, sqlite3\n"
        f"conn = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "conn.execute('PRAGMA cache_size = 1')\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        'conn.execute("CREATE TABLE filler AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"\n'
        '             " WHERE i < 2000) SELECT randomblob(1000) AS b FROM n")\n'
        "conn.execute('DROP TABLE uploads')\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (tmp_path / "jobs.sqlite3-journal").exists()
    SQLiteDatabase(path).close()
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert schema(conn) == schema(reference(SCHEMA_VERSION))
    finally:
        conn.close()


def test_client_secrets_table_is_checked_like_the_others(tmp_path: Path) -> None:
    """Schema 8 added client_secrets: a file at 8 without it is refused in
    words, as one without its uploads table is; one at 7 gets it."""
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:7]:
        for statement in statements(migration.sql):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 7")
    assert migrate(conn) == SCHEMA_VERSION
    conn.execute("INSERT INTO client_secrets VALUES ('h', '{}', 1.0, 2.0)")
    conn.execute("DROP TABLE client_secrets")
    with pytest.raises(UnusableDatabase, match="has schema version 8 but no client_secrets table"):
        check_schema(conn)
    conn.close()
