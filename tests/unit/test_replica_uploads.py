"""Chunked uploads on two replicas (one PostgreSQL database, one storage
folder): one replica's housekeeping sweep runs at the worst moments of the
other's upload and must not delete its bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.store import SQLUploadStore
from whisper_mcp.server.uploads import UploadManager

pytestmark = pytest.mark.anyio

Replica = Callable[[str], UploadManager]


@pytest.fixture
def replica(postgres_url: str, tmp_path: Path) -> Iterator[Replica]:
    made: list[SQLUploadStore] = []

    def make(name: str) -> UploadManager:
        store = SQLUploadStore(PostgresDatabase(postgres_url))
        made.append(store)
        return UploadManager(store, FileStore(tmp_path / "shared-storage"), max_bytes=2**20, min_free_bytes=0, ttl=600)

    yield make
    for store in made:
        store.close()


def sweep_inside(target: object, method: str, other: UploadManager, after: bool) -> None:
    """Run ``other.sweep`` just before (or after) ``target.method``: the
    interleaving a sweep on another replica can hit."""
    original = getattr(target, method)

    def wrapped(*args: object, **kwargs: object) -> object:
        if not after:
            other.sweep(0.0)
        result = original(*args, **kwargs)
        if after:
            other.sweep(0.0)
        return result

    setattr(target, method, wrapped)


async def test_a_sweep_between_the_file_and_its_record_keeps_the_file(replica: Replica) -> None:
    a, b = replica("a"), replica("b")
    # a has created the upload's file and not yet its record when b sweeps.
    sweep_inside(a._store, "create", b, after=False)
    data = b"x" * 1000
    begun = await a.begin("clip.wav", len(data), hashlib.sha256(data).hexdigest())
    answer = await a.chunk(begun["upload_id"], 0, data)
    assert answer["complete"] is True


async def test_a_sweep_between_taking_the_upload_and_moving_its_file_keeps_the_file(replica: Replica) -> None:
    a, b = replica("a"), replica("b")
    data = b"y" * 1000
    begun = await a.begin("clip.wav", len(data), hashlib.sha256(data).hexdigest())
    await b.chunk(begun["upload_id"], 0, data)
    # a has taken the record (the claim) and not yet moved the bytes when b sweeps.
    sweep_inside(a._store, "delete", b, after=True)
    stored, _ = await a.take(begun["upload_id"])
    assert stored.path.read_bytes() == data


async def test_expired_uploads_and_old_litter_are_still_removed(replica: Replica) -> None:
    a, b = replica("a"), replica("b")
    begun = await a.begin("clip.wav", 10, None)
    path = a._files.upload_path(begun["upload_id"])
    assert b.sweep(2**40) == 1  # long after its expiry, on another replica
    assert not path.exists()
