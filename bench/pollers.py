"""Many concurrent pollers of /health and /status: what the responsiveness
figures (sections responsive and replicas) measure with."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.service import FINISHED
from bench.stats import pct

POLLERS = 50
POLLER_INTERVAL_S = 0.25  # each poller's pause between requests (about 200 req/s in all)


class RawHttp:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads the
    answers with no parsing beyond the status line and Content-Length. The
    pollers use it instead of httpx: 50 httpx clients in one Python process
    cost about a millisecond of client CPU per request, which queued up in
    this process and showed as server latency; 50 real pollers are 50
    processes (agents, load balancers), each with its own CPU."""

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connect_s = 0.0  # the last get's time to open its connection (0 on a kept-alive one)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.connect_s = 0.0
        if self.writer is None:
            t = time.perf_counter()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.connect_s = time.perf_counter() - t
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(
                int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length"
            )
            return int(lines[0].split()[1]), await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, StopIteration, ValueError, IndexError):
            await self.close()
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def poll_storm(url: str, status_path: str, stop: Callable[[], bool], watch_job: bool) -> dict[str, Any]:
    """50 pollers alternating /health and ``status_path`` until ``stop()``,
    each on its own keep-alive connection (RawHttp).

    With ``watch_job`` the pollers also stop once the status they read is final."""
    lat: dict[str, list[float]] = {"health": [], "status": []}
    errors = 0
    error_samples: list[str] = []
    done = asyncio.Event()

    async def poller(i: int) -> None:
        nonlocal errors
        rng = random.Random(i)
        conn = RawHttp(url)
        await asyncio.sleep(rng.random() * POLLER_INTERVAL_S)
        first = True
        k = i
        try:
            while not (done.is_set() or stop()):
                kind = "health" if k % 2 == 0 else "status"
                k += 1
                t = time.perf_counter()
                try:
                    code, body = await conn.get("/health" if kind == "health" else status_path)
                    dt = time.perf_counter() - t
                    if code != 200:
                        errors += 1
                        if len(error_samples) < 5:
                            error_samples.append(f"{code} {body[:120]!r}")
                    elif kind == "status" and watch_job and json.loads(body).get("status") in FINISHED:
                        done.set()
                except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                    errors += 1
                    dt = None
                    if len(error_samples) < 5:
                        error_samples.append(f"{type(exc).__name__}: {exc}")
                if dt is not None and not first:  # the first request also opens the connection
                    lat[kind].append(dt)
                first = False
                await asyncio.sleep(POLLER_INTERVAL_S)
        finally:
            await conn.close()

    lag: list[float] = []

    async def lag_monitor() -> None:
        # How late the client's own event loop wakes up: the part of the
        # measured latency that is the client's, not the server's.
        while not (done.is_set() or stop()):
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag.append(time.perf_counter() - t - 0.01)

    t0 = time.perf_counter()
    await asyncio.gather(lag_monitor(), *(poller(i) for i in range(POLLERS)))
    elapsed = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "error_samples": error_samples, "elapsed_s": elapsed, "requests": sum(len(v) for v in lat.values()),
            "client_lag_p50_ms": pct(lag, 50) * 1e3, "client_lag_p99_ms": pct(lag, 99) * 1e3}  # fmt: skip


async def status_storm(targets: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """POLLERS pollers for ``seconds``, poller i on ``targets[i % len]`` (url, status
    path), each alternating /health and the status path with POLLER_INTERVAL_S pauses;
    the first request of each poller (connection set-up) is dropped."""
    lat: dict[str, list[float]] = {"health": [], "status": []}
    errors: list[str] = []
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=POLLERS, max_keepalive_connections=POLLERS)
    clients = {url: httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url, _ in targets}
    try:

        async def poller(i: int) -> None:
            url, status_path = targets[i % len(targets)]
            await asyncio.sleep(random.Random(i).random() * POLLER_INTERVAL_S)
            k, first = i, True
            while time.monotonic() < end:
                kind = "health" if k % 2 == 0 else "status"
                k += 1
                t = time.perf_counter()
                try:
                    r = await clients[url].get("/health" if kind == "health" else status_path)
                    dt: float | None = time.perf_counter() - t
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError as exc:
                    dt = None
                    errors.append(f"{type(exc).__name__}: {exc}")
                if dt is not None and not first:
                    lat[kind].append(dt)
                first = False
                await asyncio.sleep(POLLER_INTERVAL_S)

        await asyncio.gather(*(poller(i) for i in range(POLLERS)))
    finally:
        for c in clients.values():
            await c.aclose()
    return {"lat": lat, "errors": len(errors), "error_samples": errors[:5]}
