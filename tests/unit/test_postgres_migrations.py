"""The same numbered migrations on PostgreSQL: replicas starting together,
the explicit `whisper-mcp migrate`, and a database newer than the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from whisper_mcp.queue.migrations import SCHEMA_VERSION, SchemaTooNew, UnusableDatabase
from whisper_mcp.queue.postgres import migrate_postgres

from helpers import ROOT


def columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' ORDER BY ordinal_position"
        ).fetchall()
    return [name for (name,) in rows]


def test_three_replicas_migrating_at_once_all_succeed(postgres_url: str, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "whisper_mcp", "migrate", "--database-url", postgres_url],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"schema version {SCHEMA_VERSION}" in out
        assert "postgres@" not in out  # no credentials or user part in what is printed
    assert "lease_expires_at" in columns(postgres_url) and "cancel_requested" in columns(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM whisper_mcp_schema").fetchall() == [(SCHEMA_VERSION,)]
    assert migrate_postgres(postgres_url) == SCHEMA_VERSION  # again: nothing to do
    assert list(tmp_path.iterdir()) == []  # no empty ./service-storage where it ran


def test_a_newer_database_is_refused_and_left_alone(postgres_url: str) -> None:
    migrate_postgres(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE whisper_mcp_schema SET version = %s", (SCHEMA_VERSION + 1,))
    before = columns(postgres_url)
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        migrate_postgres(postgres_url)
    assert columns(postgres_url) == before
    done = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "migrate", "--database-url", postgres_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Upgrade whisper-mcp" in done.stderr and "Traceback" not in done.stderr


def test_a_dropped_table_is_refused_in_words_and_not_made_again(postgres_url: str) -> None:
    migrate_postgres(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE uploads")
    with pytest.raises(UnusableDatabase, match=f"has schema version {SCHEMA_VERSION} but no uploads table"):
        migrate_postgres(postgres_url)
    done = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "migrate", "--database-url", postgres_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no uploads table: restore it from a backup" in done.stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('uploads')").fetchone() == (None,)


def test_a_schema_6_database_gets_client_secrets_and_keeps_its_jobs(postgres_url: str) -> None:
    """A database the release before client secrets made (schema 6, one job
    in it) migrates to today's, and its secrets work across connections as
    they must across replicas."""
    from whisper_mcp.queue.client_secrets import SQLClientSecretStore
    from whisper_mcp.queue.migrations import MIGRATIONS, POSTGRES_BASELINE_SQL
    from whisper_mcp.queue.postgres import PostgresDatabase

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(POSTGRES_BASELINE_SQL)
        conn.execute(MIGRATIONS[5].postgres)  # type: ignore[arg-type]
        conn.execute("CREATE TABLE whisper_mcp_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO whisper_mcp_schema VALUES (6)")
        conn.execute(
            "INSERT INTO jobs (job_id, key, status, model, audio_sha256, audio_bytes, duration, options, created_at)"
            " VALUES ('old', 'k', 'completed', 'tiny.en', 'x', 1, 1.0, '{}', 1.0)"
        )
    assert migrate_postgres(postgres_url) == SCHEMA_VERSION == 8
    one, other = PostgresDatabase(postgres_url), PostgresDatabase(postgres_url)
    try:
        SQLClientSecretStore(one).create("hash", '{"type": "transcription"}', 1.0, 9e9)
        assert SQLClientSecretStore(other).redeem("hash", 2.0) == '{"type": "transcription"}'
        assert SQLClientSecretStore(one).redeem("hash", 2.0) is None
        assert one.run("SELECT job_id, status FROM jobs")[0] == [("old", "completed")]
    finally:
        one.close()
        other.close()
