"""The service under test: started as a user starts it, driven over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.context import Ctx
from whisper_mcp.testing import ServerProcess, free_port

FINISHED = ("completed", "failed", "cancelled")
# Client-side poll interval while waiting for one job (sections warm, queue, pickup).
POLL_S = 0.02


def server_process(
    ctx: Ctx, storage: Path, log: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """``python -m whisper_mcp serve`` of the benchmarked tree (cwd and
    PYTHONPATH) with the run's model and device (and ``env`` added to the
    environment), on a free loopback port unless ``port``; not started yet."""
    return ServerProcess(
        storage, log, "--model", ctx.model, "--device", ctx.device, *extra,
        port=port, env={**ctx.sub_env(), **(env or {})}, cwd=ctx.tree,
    )  # fmt: skip


@contextlib.contextmanager
def serving(
    ctx: Ctx, *extra: str, timeout: float = 300.0, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started server_process with fresh storage under the section's folder;
    SIGTERM when the block ends."""
    port = free_port()
    srv = server_process(
        ctx, ctx.workdir / f"storage-{port}", ctx.workdir / f"server-{port}.log", *extra, port=port, env=env
    )
    srv.start(timeout)
    try:
        yield srv
    finally:
        srv.stop()


def submit(client: httpx.Client, path: Path, **fields: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        r = client.post(
            "/transcribe", files={"file": (path.name, f, "application/octet-stream")}, data={"cache": "false", **fields}
        )
    if r.status_code != 202:
        raise RuntimeError(f"POST /transcribe {path.name}: {r.status_code} {r.text[:300]}")
    return r.json()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 900.0, poll: float | None = POLL_S) -> dict[str, Any]:
    """The job's record once it has ended: polled every ``poll`` seconds, or
    with ``poll=None`` by long polls (GET /status?wait=50: no polling load on the server)."""
    deadline = time.monotonic() + timeout
    params = {"wait": "50"} if poll is None else None
    while True:
        record = client.get(f"/status/{job_id}", params=params, timeout=80).json()
        if record.get("status") in FINISHED:
            return record
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not finished after {timeout}s: {record}")
        if poll is not None:
            time.sleep(poll)


def completed(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("status") != "completed":
        raise RuntimeError(f"job {record.get('job_id')} ended {record.get('status')}: {record.get('error')}")
    return record


def service_e2e(client: httpx.Client, path: Path, **fields: str) -> dict[str, Any]:
    """Upload, wait (GET /status?wait=50, a long poll), download: what one caller sees."""
    t0 = time.perf_counter()
    job = submit(client, path, **fields)
    t202 = time.perf_counter()
    record = completed(wait_done(client, job["job_id"], poll=None))
    t_seen = time.perf_counter()
    text = client.get(f"/download/{job['job_id']}").text
    t1 = time.perf_counter()
    return {
        "total_s": t1 - t0,
        "upload_to_202_s": t202 - t0,
        "created_to_started_s": record["started_at"] - record["created_at"],
        "started_to_finished_s": record["finished_at"] - record["started_at"],
        "download_s": t1 - t_seen,
        "text": text,
    }


def pickups(client: httpx.Client, clip: Path, n: int) -> dict[str, list[float]]:
    """``n`` jobs one at a time onto idle workers: started_at - created_at (server
    clocks, one machine), started_at - the client's receipt of the 202, run time,
    and the upload's time to its 202 (client clock)."""
    out: dict[str, list[float]] = {"pickup": [], "after_202": [], "run": [], "upload": []}
    for _ in range(n):
        time.sleep(0.3)  # the workers go idle (blocked waiting for work)
        t0 = time.perf_counter()
        job = submit(client, clip)
        t_202 = time.time()
        out["upload"].append(time.perf_counter() - t0)
        rec = completed(wait_done(client, job["job_id"], poll=0.05))
        out["pickup"].append(rec["started_at"] - rec["created_at"])
        out["after_202"].append(rec["started_at"] - t_202)
        out["run"].append(rec["finished_at"] - rec["started_at"])
    return out


def upload_all(urls: list[str], paths: list[Path]) -> list[dict[str, Any]]:
    """Every file uploaded concurrently (``cache=false``), round-robin over ``urls``;
    the 202 answers in ``paths``' order."""

    async def go() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=len(paths))
        clients = [httpx.AsyncClient(base_url=u, timeout=300, limits=limits) for u in urls]
        try:

            async def one(i: int, path: Path) -> dict[str, Any]:
                r = await clients[i % len(clients)].post(
                    "/transcribe", files={"file": (path.name, path.read_bytes(), "audio/wav")}, data={"cache": "false"}
                )
                if r.status_code != 202:
                    raise RuntimeError(f"POST {path.name}: {r.status_code} {r.text[:200]}")
                return r.json()

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(paths))))
        finally:
            for c in clients:
                await c.aclose()

    return asyncio.run(go())
