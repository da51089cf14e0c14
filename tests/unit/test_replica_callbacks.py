"""Callbacks on two replicas (one PostgreSQL database, one storage folder):
each due callback is delivered by one replica, once, even when the receiver
is slower than the lease and several callbacks are due at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.postgres import PostgresDatabase
from whisper_mcp.queue.store import SQLJobStore
from whisper_mcp.server.callbacks import CallbackSender

from helpers import CallbackReceiver, request

pytestmark = pytest.mark.anyio

LEASE = 0.5  # seconds: shorter than one delivery below
RECEIVER_SECONDS = 0.8


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """A receiver slower than the lease."""
    r = CallbackReceiver(delay=RECEIVER_SECONDS)
    yield r
    r.close()


async def test_each_callback_is_delivered_once_by_one_replica(
    postgres_url: str, tmp_path: Path, receiver: CallbackReceiver
) -> None:
    url = receiver.url + "/hook"
    files = FileStore(tmp_path / "shared-storage")
    queues = [
        JobQueue(SQLJobStore(PostgresDatabase(postgres_url)), files, replica_id=name, lease_seconds=LEASE)
        for name in ("a", "b")
    ]
    try:
        a = queues[0]
        ids = [f"cb-{i}" for i in range(3)]
        for job_id in ids:
            req = request(job_id, callback_url=url)
            files.audio_path(req.key).write_bytes(b"audio")
            a._store.add(req, time.time())
            job = a.claim_next()
            assert job is not None
            a.complete(job, {"text": job_id}, "en")  # three callbacks due at once
        senders = [CallbackSender(q, public_url="http://lb", backoff=(1.0,), timeout=5.0) for q in queues]
        tasks = [asyncio.create_task(s.run()) for s in senders]
        deadline = time.monotonic() + 15
        while not all(queues[1].get(j).callback_state == "delivered" for j in ids):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, [queues[1].get(j) for j in ids]
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * RECEIVER_SECONDS)  # time for a second delivery, if one were under way
        for task in tasks:
            task.cancel()
        received = [body["job_id"] for body in receiver.bodies()]
        assert sorted(received) == ids, received
    finally:
        for q in queues:
            q.close()
