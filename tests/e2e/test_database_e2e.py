"""A job database that cannot be used stops ``whisper-mcp serve`` at start-up,
before any model is loaded, with one sentence on stderr that says what is
wrong and what to do; ``whisper-mcp migrate`` says the same; and every file
is left exactly as it was. Real damaged files, real read-only storage, a real
closed port, the real commands.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.migrations import SCHEMA_VERSION
from whisper_mcp.queue.sqlite import SQLiteJobStore

from helpers import ROOT, ServerProcess, free_port, request, tmpfs

JOBS = 500
# The commands stop before torch is imported: a few seconds, not a model load.
QUICK_SECONDS = 45.0
DROP_PRIVILEGES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder whose database holds enough jobs (about 1.3 MB of
    table pages) that its middle is rows, not free space. Ended ones (served
    from the cache), so that a server started on it has nothing to run."""
    storage = tmp_path_factory.mktemp("populated") / "storage"
    store = SQLiteJobStore(FileStore(storage).database)
    try:
        for i in range(JOBS):
            filename = f"{i:04d}-" + "recording " * 200 + ".wav"
            store.add(request(f"job-{i:04d}", filename=filename, cached_from="job-0000"), time.time())
    finally:
        store.close()
    assert (storage / "jobs.sqlite3").stat().st_size > 1_000_000
    assert not list(storage.glob("jobs.sqlite3-*"))  # closed cleanly: the file alone is the database
    return storage


@pytest.fixture
def storage(populated: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "storage"
    shutil.copytree(populated, copy)
    return copy


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under ``root``: its mode and, for a file, its bytes."""
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def refused(command: str, storage: Path, *flags: str, prefix: Sequence[str] = ()) -> str:
    """Run ``whisper-mcp serve`` (as ``ServerProcess`` does) or ``migrate``;
    assert that it stops at once, exit status 1, with one line on stderr and
    no traceback; that line."""
    args = ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--model", "tiny.en"]
    cmd = [*prefix, sys.executable, "-m", "whisper_mcp", *(args if command == "serve" else ["migrate"])]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, "--storage", str(storage), *flags],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=QUICK_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`whisper-mcp {command}` was still running after {QUICK_SECONDS:.0f} s:\n{err}")
    assert time.monotonic() - started < QUICK_SECONDS
    assert "Traceback" not in err, err
    assert proc.returncode == 1, (proc.returncode, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("whisper-mcp: error: The job database "), err
    assert lines[0].endswith("(nothing was changed)."), err
    return lines[0]


def assert_refused(storage: Path, *words: str, flags: Sequence[str] = (), prefix: Sequence[str] = ()) -> None:
    """``serve`` and ``migrate`` both refuse in the same sentence, which holds
    ``words``, and not a file or folder under ``storage`` changes."""
    before = snapshot(storage) if storage.exists() else None
    said = refused("serve", storage, *flags, prefix=prefix)
    for word in words:
        assert word in said, said
    assert refused("migrate", storage, *flags, prefix=prefix) == said
    assert (snapshot(storage) if storage.exists() else None) == before


# -- the storage before it is damaged ------------------------------------------


def test_the_undamaged_storage_serves_its_jobs(storage: Path, tmp_path: Path) -> None:
    """The control: the same folder, not damaged, starts and lists its jobs,
    so what the tests below refuse is the damage alone."""
    with ServerProcess(storage, tmp_path / "server.log") as server:
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok", health
        assert httpx.get(f"{server.url}/jobs", params={"limit": 1}).json()["total"] == JOBS


# -- damaged files -------------------------------------------------------------


def random_bytes_in_the_middle(database: Path) -> None:
    data = bytearray(database.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = random.Random(22).randbytes(8192)
    database.write_bytes(bytes(data))


def truncated(database: Path) -> None:
    os.truncate(database, database.stat().st_size // 2)


def a_table_dropped(database: Path) -> None:
    conn = sqlite3.connect(database)
    conn.execute("DROP TABLE uploads")
    conn.close()


def a_folder_in_its_place(database: Path) -> None:
    database.unlink()
    database.mkdir()
    (database / "something").write_text("kept")


DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "8 KB of random bytes in the middle": (random_bytes_in_the_middle, ("is damaged", "restore it from a backup")),
    "truncated to half": (truncated, ("is damaged", "restore it from a backup")),
    "a table dropped": (
        a_table_dropped,
        (f"has schema version {SCHEMA_VERSION} but no uploads table", "restore it from a backup"),
    ),
    "a folder in its place": (a_folder_in_its_place, ("is a folder, not a file", "move the folder away")),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_database_is_refused_in_one_sentence_and_left_as_it_was(storage: Path, damage: str) -> None:
    spoil, words = DAMAGE[damage]
    database = storage / "jobs.sqlite3"
    spoil(database)
    assert not list(storage.glob("jobs.sqlite3-*"))
    assert_refused(storage, str(database), *words)
    assert not list(storage.glob("jobs.sqlite3-*"))  # no -wal or -shm made beside it either


# -- storage that cannot be written --------------------------------------------


@pytest.fixture
def read_only_mount(populated: Path, tmp_path: Path) -> Iterator[Path]:
    """The populated storage on a tmpfs mounted read-only; unmounted afterwards."""
    with tmpfs(tmp_path / "disk", 64) as mount:  # skips unless root (the next test covers other users)
        shutil.copytree(populated, mount / "storage")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount / "storage"


def test_read_only_storage_is_refused(read_only_mount: Path) -> None:
    assert_refused(read_only_mount, "is on read-only storage", "mount the storage read-write")


def test_storage_this_user_may_not_write_is_refused(storage: Path) -> None:
    """Permissions, for a user who is not root; root is run without the
    capability that lets it write through them."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            works = subprocess.run([*DROP_PRIVILEGES, "true"], capture_output=True).returncode == 0
        except FileNotFoundError:
            works = False
        if not works:
            pytest.skip("root writes through permissions, and setpriv cannot take that from it here")
        prefix = DROP_PRIVILEGES
    paths = [storage, *storage.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        assert_refused(storage, "is read-only for the user whisper-mcp runs as", "give that user", prefix=prefix)
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


# -- PostgreSQL ----------------------------------------------------------------


def test_postgresql_that_cannot_be_reached_is_refused(tmp_path: Path) -> None:
    """A closed loopback port: one sentence, and no storage folder made."""
    storage = tmp_path / "storage"
    url = f"postgresql://whisper:s3cret@127.0.0.1:{free_port()}/jobs"
    said = refused("serve", storage, "--database-url", url)
    assert "cannot be reached" in said and "start PostgreSQL, or correct --database-url" in said, said
    assert "s3cret" not in said and "whisper:" not in said  # the address without its credentials
    assert refused("migrate", storage, "--database-url", url) == said
    assert not storage.exists()
