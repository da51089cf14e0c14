"""Migration 7 (jobs.audio_url) on storage of earlier schemas, SQLite and
PostgreSQL: the rows are kept, read as sent as bytes, and today's queue
stores, runs and ends a job sent as a URL in the migrated database.
(Every release folder migrating to today's schema: tests/unit/test_migrations.py.)"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from whisper_mcp.queue import migrations, postgres
from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from whisper_mcp.queue.postgres import PostgresDatabase, migrate_postgres
from whisper_mcp.queue.sqlite import SQLiteJobStore
from whisper_mcp.queue.store import SQLJobStore

from helpers import FIXTURES, request

RELEASE = FIXTURES / "releases" / "928939f" / "storage"  # schema 5, the last release before leases

# A job as schema 6 stored it, mid-run on a replica that died.
V6_JOB = (
    "INSERT INTO jobs (job_id, key, status, model, audio_sha256, audio_bytes, duration, options, created_at,"
    " started_at, attempts, engine, progress, lease_owner, lease_expires_at)"
    " VALUES ('v6-job', 'abcdef0123456789abcdef0123456789', 'processing', 'tiny.en', 'f00d', 10, 1.5,"
    " '{}', 1.0, 2.0, 1, 'openai/float32', 0.5, 'gone', 3.0)"
)


def at_version_6(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    monkeypatch.setattr(module, "MIGRATIONS", MIGRATIONS[:6])
    monkeypatch.setattr(module, "SCHEMA_VERSION", 6)


def run_a_url_job(queue: JobQueue) -> None:
    """Today's queue on the migrated database: a job sent as a URL is stored
    without audio, claimed, given its fetched audio, and completed."""
    job = queue.enqueue(None, request("by-url", audio_sha256="", audio_bytes=0, duration=0.0, audio_url="https://x/a"))
    assert job.awaits_audio and job.audio_url == "https://x/a" and job.status is JobStatus.QUEUED
    claimed = queue.claim_next()
    assert claimed is not None and claimed.job_id == "by-url"
    sink = queue.files.incoming_file(2**20, 0)
    sink.write((FIXTURES / "short.wav").read_bytes())
    upload = sink.finish()
    fetched = queue.fetched(claimed, upload, 1.25)
    assert not fetched.awaits_audio and (fetched.audio_sha256, fetched.duration) == (upload.sha256, 1.25)
    assert queue.files.audio_path(fetched.key).read_bytes() == (FIXTURES / "short.wav").read_bytes()
    assert queue.complete(fetched, {"text": "hi", "segments": []}, "en") == "completed"
    ended = queue.get("by-url")
    assert ended is not None and ended.status is JobStatus.COMPLETED and ended.audio_url == "https://x/a"


def test_a_schema_6_folder_migrates_and_runs_url_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = tmp_path / "storage"
    shutil.copytree(RELEASE, storage)
    path = storage / "jobs.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    at_version_6(monkeypatch, migrations)
    assert migrate(conn) == 6
    conn.execute(V6_JOB)
    before = {row[0] for row in conn.execute("SELECT job_id FROM jobs")}
    monkeypatch.undo()
    assert migrate(conn) == SCHEMA_VERSION == 8
    assert conn.execute("SELECT COUNT(*) FROM jobs WHERE audio_url IS NOT NULL").fetchone() == (0,)
    conn.close()

    store = SQLiteJobStore(path)
    queue = JobQueue(store, FileStore(storage))
    try:
        assert {job.job_id for job in queue.list(status=None, limit=100, offset=0).jobs} == before
        old = queue.get("v6-job")
        assert old is not None and old.audio_url is None and not old.awaits_audio and old.progress == 0.5
        queue.recover()  # the dead replica's run goes back to the queue
        queue.cancel("v6-job")
        for job in queue.list(status=JobStatus.QUEUED, limit=100, offset=0).jobs:
            queue.cancel(job.job_id)  # the release's queued jobs: not part of this test
        run_a_url_job(queue)
    finally:
        queue.close()


@pytest.mark.slow
def test_a_schema_6_postgres_database_migrates_and_runs_url_jobs(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_version_6(monkeypatch, postgres)
    assert migrate_postgres(postgres_url) == 6
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(V6_JOB)
    monkeypatch.undo()
    assert migrate_postgres(postgres_url) == SCHEMA_VERSION
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT job_id, audio_url FROM jobs").fetchall() == [("v6-job", None)]

    queue = JobQueue(SQLJobStore(PostgresDatabase(postgres_url)), FileStore(tmp_path / "storage"))
    try:
        old = queue.get("v6-job")
        assert old is not None and old.audio_url is None and old.lease_owner == "gone"
        assert queue.cancel("v6-job") == "requested"  # still leased by the replica that died
        run_a_url_job(queue)
    finally:
        queue.close()
