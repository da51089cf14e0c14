"""Which replicas a load balancer would send requests to, while some of them
are killed and restarted: an active health check plus a passive one.

Active: every ``CHECK_S`` each replica's ``GET /health`` on a fresh
connection (``CHECK_TIMEOUT_S`` to answer). It is in rotation while that
answers with ``"model_loaded": true`` (the readiness field docs/replicas.md
names), or 503 ``database_unavailable`` (or ``storage_unavailable``): the
process is ready and the database (the bucket) is away for every replica
alike, so taking them all out helps no one.
Passive: a connection error or a timeout on any request takes the replica
out until its next good check, as nginx's ``max_fails=1`` does."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from bench.pollers import RawHttp

CHECK_S = 0.5
CHECK_TIMEOUT_S = 1.0
# 503 codes that mean a shared dependency is away, not this replica.
AWAY = ("database_unavailable", "storage_unavailable")


class Balancer:
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls  # replica name -> base URL
        self.up: set[str] = set()
        self.joined: dict[str, float] = {}  # name -> when (time.monotonic) it last came into rotation
        self._turn = itertools.count()
        self.checks = 0
        self.outs = 0  # times a replica was taken out of rotation

    def pick(self) -> str | None:
        """The next replica in rotation (round-robin), None while none is up."""
        ready = sorted(self.up)
        return ready[next(self._turn) % len(ready)] if ready else None

    def failed(self, name: str) -> None:
        """A request to ``name`` could not connect or timed out: out until its next good check."""
        if name in self.up:
            self.up.discard(name)
            self.outs += 1

    async def watch(self, stop: asyncio.Event) -> None:
        """The active check, every CHECK_S, until ``stop``."""
        while not stop.is_set():
            await asyncio.gather(*(self._check(name) for name in self.urls))
            self.checks += 1
            try:
                await asyncio.wait_for(stop.wait(), CHECK_S)
            except TimeoutError:
                pass

    async def _check(self, name: str) -> None:
        conn = RawHttp(self.urls[name])
        try:
            code, body = await asyncio.wait_for(conn.get("/health"), CHECK_TIMEOUT_S)
            record = json.loads(body)
            away = code == 503 and (record.get("error") or {}).get("code") in AWAY
            ready = (code == 200 and record.get("model_loaded") is True) or away
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, StopIteration):
            ready = False
        finally:
            await conn.close()
        if ready:
            if name not in self.up:
                self.joined[name] = time.monotonic()
            self.up.add(name)
        else:
            self.failed(name)
