"""Section replicas: three replicas on one PostgreSQL database (a throwaway
cluster) against one server on SQLite: pick-up latency (NOTIFY across
replicas), throughput of 3 replicas vs 1, /status p99 with all transcribing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.clips import concatenated, decoded, make_clips, write_wav
from bench.context import FIXTURES, Ctx
from bench.pollers import POLLERS, status_storm
from bench.report import Section
from bench.service import completed, pickups, server_process, submit, upload_all, wait_done
from bench.stats import median, pct
from whisper_mcp.testing import ServerProcess


def start_together(servers: list[ServerProcess], timeout: float = 300.0) -> None:
    """Start servers at once (their model loads overlap); stop them all if one fails."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(servers)) as pool:
        errors = [e for e in pool.map(lambda s: _start_error(s, timeout), servers) if e is not None]
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]


def _start_error(server: ServerProcess, timeout: float) -> BaseException | None:
    try:
        server.start(timeout)
    except BaseException as exc:  # reported by start_together
        return exc
    return None


def spread_at_once(urls: list[str], clips: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """All clips uploaded concurrently, round-robin over ``urls``; waits for every job
    (on the first URL: any replica answers). Span: first submit -> last finished_at."""
    t0 = time.time()
    jobs = upload_all(urls, clips)
    with httpx.Client(base_url=urls[0], timeout=60) as client:
        records = [completed(wait_done(client, j["job_id"], poll=0.1)) for j in jobs]
    return max(r["finished_at"] for r in records) - t0, records


def running_on(clients: list[httpx.Client], job_ids: list[str], timeout: float = 120.0) -> None:
    """Wait until every job is processing."""
    deadline = time.monotonic() + timeout
    while any(clients[0].get(f"/status/{j}").json()["status"] != "processing" for j in job_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not all running: {[clients[0].get(f'/status/{j}').json() for j in job_ids]}")
        time.sleep(0.05)


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def run(ctx: Ctx, sec: Section) -> None:
    """Three replicas on one PostgreSQL database and one storage folder vs one
    server on SQLite, all on this machine, with default settings."""
    from whisper_mcp.testing import PostgresCluster

    if PostgresCluster.binaries() is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    n_pick = ctx.pick(15, 6)
    n_clips = ctx.pick(12, 6)
    storm_s = ctx.pick(10.0, 5.0)
    clip = FIXTURES / "short.wav"
    clips_dir = ctx.workdir / "clips"
    clips_dir.mkdir()
    clips = make_clips(clips_dir, n_clips, seed=5)
    busy_wav = ctx.workdir / "busy.wav"  # keeps a worker busy for the cross-replica pick-up and the storm
    write_wav(busy_wav, concatenated(decoded(FIXTURES / "long.mp3"), ctx.pick(240.0, 150.0), seed=11))

    def server(storage: Path, name: str, *extra: str) -> ServerProcess:
        return server_process(ctx, storage, ctx.workdir / f"{name}.log", *extra)

    rates: dict[str, list[float]] = {"sqlite": [], "pg1": [], "pg3": []}
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()

    with PostgresCluster() as cluster:
        url = cluster.database()
        shared = ctx.workdir / "shared-storage"
        replica = {
            name: server(shared, f"replica-{name}", "--database-url", url, "--replica-id", name) for name in "abc"
        }
        sqlite = server(ctx.workdir / "sqlite-storage", "sqlite")
        start_together([sqlite, replica["a"]])
        try:
            s_client = httpx.Client(base_url=sqlite.url, timeout=300)
            a_client = httpx.Client(base_url=replica["a"].url, timeout=300)
            for c in (s_client, a_client):
                completed(wait_done(c, submit(c, FIXTURES / "speech.wav")["job_id"]))  # warm-up
            phase("start SQLite server and replica a, warm-up")
            # Pick-up: one idle worker, SQLite vs PostgreSQL (interleaved halves).
            pick = {"sqlite": pickups(s_client, clip, n_pick // 2), "pg1": pickups(a_client, clip, n_pick // 2)}
            for name, c in (("pg1", a_client), ("sqlite", s_client)):
                for k, v in pickups(c, clip, n_pick - n_pick // 2).items():
                    pick[name][k] += v
            phase("pick-up, SQLite and 1 replica")
            # Throughput, one server each (rounds A B ... B A with 3 replicas in the middle).
            rates["sqlite"].append(n_clips / (spread_at_once([sqlite.url], clips)[0] / 60))
            rates["pg1"].append(n_clips / (spread_at_once([replica["a"].url], clips)[0] / 60))

            phase("throughput, first rounds of SQLite and 1 replica")
            start_together([replica["b"], replica["c"]])
            urls = [r.url for r in replica.values()]
            clients = [a_client] + [httpx.Client(base_url=u, timeout=300) for u in urls[1:]]
            for c in clients[1:]:
                completed(wait_done(c, submit(c, FIXTURES / "speech.wav")["job_id"]))  # warm-up
            phase("start replicas b and c, warm-up")
            # Cross-replica pick-up: jobs sent to the replica busy with a long file,
            # so another, idle one must learn of them (NOTIFY) and take them.
            busy = submit(a_client, busy_wav)["job_id"]
            running_on(clients, [busy])
            with psycopg_connect(url) as conn:
                owner = conn.execute("SELECT lease_owner FROM jobs WHERE job_id = %s", (busy,)).fetchone()[0]
            busy_client = clients["abc".index(owner)]
            pick["pg_notify"] = pickups(busy_client, clip, n_pick)
            busy_throughout = a_client.get(f"/status/{busy}").json()["status"] == "processing"
            a_client.delete(f"/jobs/{busy}")
            completed_or_cancelled = wait_done(a_client, busy)
            phase("pick-up across replicas")
            # Status under load: a long file running on every replica, pollers spread over the three.
            longs = [submit(c, busy_wav)["job_id"] for c in clients]
            running_on(clients, longs)
            storm3 = asyncio.run(status_storm([(u, f"/status/{j}") for u, j in zip(urls, longs, strict=True)], storm_s))
            for j in longs:
                a_client.delete(f"/jobs/{j}")
            for j in longs:
                wait_done(a_client, j)
            s_long = submit(s_client, busy_wav)["job_id"]
            running_on([s_client], [s_long])
            storm1 = asyncio.run(status_storm([(sqlite.url, f"/status/{s_long}")], storm_s))
            s_client.delete(f"/jobs/{s_long}")
            wait_done(s_client, s_long)
            phase("status under load, 3 replicas and SQLite")
            # Throughput with three replicas, two rounds.
            for _ in range(2):
                rates["pg3"].append(n_clips / (spread_at_once(urls, clips)[0] / 60))
            replica["b"].stop()
            replica["c"].stop()
            rates["pg1"].append(n_clips / (spread_at_once([replica["a"].url], clips)[0] / 60))
            rates["sqlite"].append(n_clips / (spread_at_once([sqlite.url], clips)[0] / 60))
            phase("throughput, 3 replicas, then the last rounds of 1 replica and SQLite")
            for c in clients + [s_client]:
                c.close()
        finally:
            for r in [sqlite, *replica.values()]:
                r.stop()

    ms = {k: [x * 1000 for x in v["pickup"]] for k, v in pick.items()}
    sec.add(
        "pick-up, PostgreSQL, 1 replica, idle: created_at->started_at, median", median(ms["pg1"]), "ms",
        "SQLite, same", median(ms["sqlite"]), median(ms["pg1"]) / median(ms["sqlite"]), "pg/sqlite", "< 20 ms",
        median(ms["pg1"]) < 20,
    )  # fmt: skip
    sec.add(
        "pick-up, PostgreSQL, sent to a busy replica, taken by an idle one (NOTIFY), median", median(ms["pg_notify"]),
        "ms", "SQLite, 1 server idle", median(ms["sqlite"]), median(ms["pg_notify"]) / median(ms["sqlite"]),
        "pg/sqlite", "< 20 ms", median(ms["pg_notify"]) < 20,
    )  # fmt: skip
    pg1, pg3, lite = (sum(rates[k]) / len(rates[k]) for k in ("pg1", "pg3", "sqlite"))
    sec.add(
        f"throughput, 3 replicas (PostgreSQL), {n_clips} clips at once, spread", pg3, "clips/min",
        "1 replica (PostgreSQL)", pg1, pg3 / pg1, "3/1", "", None,
    )  # fmt: skip
    sec.add(
        f"throughput, 1 replica (PostgreSQL), {n_clips} clips at once", pg1, "clips/min", "1 server (SQLite)", lite,
        pg1 / lite, "pg/sqlite", "", None,
    )  # fmt: skip
    s3, s1 = pct(storm3["lat"]["status"], 99) * 1000, pct(storm1["lat"]["status"], 99) * 1000
    sec.add(
        f"/status p99, {POLLERS} pollers over 3 replicas, each transcribing", s3, "ms",
        "1 server (SQLite), transcribing", s1, s3 / s1, "3 replicas/1", "< 20 ms *", s3 < 20,
    )  # fmt: skip
    sec.details.update(
        pickup_ms=ms, pickup_after_202_ms={k: [x * 1000 for x in v["after_202"]] for k, v in pick.items()},
        run_ms={k: [x * 1000 for x in v["run"]] for k, v in pick.items()}, busy_throughout=busy_throughout,
        busy_replica=owner, rates_clips_per_min=rates, clips=n_clips, phase_seconds=phases,
        storm3={"health_p99_ms": pct(storm3["lat"]["health"], 99) * 1000, "status_p50_ms": pct(storm3["lat"]["status"], 50) * 1000,
                "requests": sum(len(v) for v in storm3["lat"].values()), "errors": storm3["errors"], "error_samples": storm3["error_samples"]},
        storm1={"health_p99_ms": pct(storm1["lat"]["health"], 99) * 1000, "status_p50_ms": pct(storm1["lat"]["status"], 50) * 1000,
                "requests": sum(len(v) for v in storm1["lat"].values()), "errors": storm1["errors"], "error_samples": storm1["error_samples"]},
        busy_job=completed_or_cancelled.get("status"),
    )  # fmt: skip
    after = {k: median(pick[k]["after_202"]) * 1000 for k in ("sqlite", "pg1", "pg_notify")}
    busy_note = "ran its long file throughout" if busy_throughout else "FINISHED its long file early (figure mixed)"
    sec.notes.append(
        f"pick-up p95: SQLite {pct(ms['sqlite'], 95):.1f}, PostgreSQL 1 replica {pct(ms['pg1'], 95):.1f}, "
        f"cross-replica (NOTIFY) {pct(ms['pg_notify'], 95):.1f} ms; started_at - the client's 202, median: "
        f"{after['sqlite']:.1f} / {after['pg1']:.1f} / {after['pg_notify']:.1f} ms; the busy replica ({owner}) {busy_note}"
    )
    rounds = {k: "/".join(f"{x:.1f}" for x in rates[k]) for k in rates}
    sec.notes.append(
        f"throughput rounds (clips/min): SQLite {rounds['sqlite']}, PostgreSQL 1 replica {rounds['pg1']}, "
        f"3 replicas {rounds['pg3']}; every replica on this machine's {os.cpu_count()} cores with default "
        "threads: 3 replicas share the same CPUs"
    )
    s3d, s1d = sec.details["storm3"], sec.details["storm1"]
    sec.notes.append(
        f"under load: /health p99 3 replicas {s3d['health_p99_ms']:.1f} ms vs 1 server {s1d['health_p99_ms']:.1f} ms; "
        f"/status p50 {s3d['status_p50_ms']:.1f} vs {s1d['status_p50_ms']:.1f} ms; "
        f"{s3d['requests']} + {s1d['requests']} requests, {s3d['errors']} + {s1d['errors']} errors"
    )
