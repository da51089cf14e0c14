"""Fixtures the queue and worker tests share: a storage folder and a SQLite
job store on it (test_store.py overrides ``store`` to run on PostgreSQL too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.sqlite import SQLiteJobStore


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "storage")


@pytest.fixture
def store(files: FileStore) -> Iterator[SQLiteJobStore]:
    s = SQLiteJobStore(files.database)
    yield s
    s.close()
