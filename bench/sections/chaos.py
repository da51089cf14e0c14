"""Section chaos: three replicas on PostgreSQL (and an S3 bucket, where the
service has --storage-url) take 1,000 short jobs while one replica is
killed with SIGKILL every 10 s and started again, and PostgreSQL and the
bucket are each restarted once. Every job answered 202 must complete
exactly once, every callback job must see one delivery id, and /status
must stay quick on the replicas that are up."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.balancer import CHECK_S, CHECK_TIMEOUT_S, Balancer
from bench.context import FIXTURES, Ctx
from bench.objectstore import seaweedfs, supports_storage_url
from bench.pollers import RawHttp
from bench.receiver import DeliveryReceiver
from bench.report import Section
from bench.sections.replicas import psycopg_connect, start_together
from bench.service import FINISHED, server_process
from bench.stats import pct
from whisper_mcp.testing import ServerProcess

CLIP = FIXTURES / "short.wav"  # 2.4 s of real speech: "Hello world, testing one two three."
WORDS = {"hello", "world", "testing"}
CALLBACK_EVERY = 4  # every 4th job names a callback URL
KILL_EVERY_S = 10.0
PG_AT_S, S3_AT_S, OUTAGE_S = 25.0, 45.0, 5.0  # when PostgreSQL and the bucket go away, and for how long
SUBMITTERS = 4  # concurrent clients submitting
RETRY_S = 0.5  # a client's pause before it sends a refused submission again
STATUS_POLLERS, STATUS_EVERY_S, STATUS_TIMEOUT_S = 10, 0.25, 5.0
# Short leases, so that a killed replica's jobs are taken over within seconds,
# yet longer than the database's outage (with the time it takes to come back),
# so that the live replicas' runs survive it; one torch thread each: three
# replicas share the cores.
REPLICA_FLAGS = ("--lease-seconds", "15", "--heartbeat-seconds", "2", "--threads", "1", "--log-format", "json")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Run:
    """What the clients saw, and what was done to the replicas, in one chaos run."""

    t0: float = field(default_factory=time.monotonic)
    accepted: dict[str, bool] = field(default_factory=dict)  # job id answered 202 -> sent with a callback
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)  # "503 <code>", "connect", ...
    # /status samples: (seconds since t0, connect seconds, server seconds, status code, replica,
    # seconds since that replica came into rotation)
    status: list[tuple[float, float, float, int, str, float]] = field(default_factory=list)
    status_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    restarts_s: list[float] = field(default_factory=list)
    start_failures: list[str] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    submitted_by_s: float = 0.0
    finished_by_s: float | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> None:
        self.timeline.append((round(self.now(), 2), what))
        print(f"   [{self.now():6.1f} s] {what}", flush=True)


def run(ctx: Ctx, sec: Section) -> None:
    from whisper_mcp.testing import PostgresCluster

    if PostgresCluster.binaries() is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    n_jobs = ctx.pick(1000, 100)
    submit_over_s = ctx.pick(240.0, 60.0)  # submissions paced over this long, so they meet the kills
    deadline_s = ctx.pick(2400.0, 900.0)
    store_class, store_why = seaweedfs(ctx) if supports_storage_url(ctx) else (None, "no --storage-url in this tree")
    mode = "S3" if store_class is not None else "shared folder"
    print(
        f"   storage: {'three local folders and one S3 bucket (SeaweedFS, ' + store_why + ')' if store_class else 'ONE SHARED FOLDER (fallback: ' + store_why + ')'}",
        flush=True,
    )
    receiver = DeliveryReceiver()
    store = store_class() if store_class is not None else None
    try:
        with PostgresCluster() as cluster:
            url = cluster.database()
            env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
            storage: dict[str, Path] = {}
            extra: tuple[str, ...] = ()
            if store is not None:
                store.start()
                extra = ("--storage-url", f"s3://{store.bucket()}/chaos")
                env.update(store.env)
                storage = {name: ctx.workdir / f"local-{name}" for name in "abc"}
            else:
                storage = dict.fromkeys("abc", ctx.workdir / "shared-storage")
            replicas = {
                name: server_process(
                    ctx, storage[name], ctx.workdir / f"replica-{name}.log", "--database-url", url,
                    "--replica-id", name, *REPLICA_FLAGS, *extra, env=env,
                )
                for name in "abc"
            }  # fmt: skip
            start_together(list(replicas.values()))
            try:
                state = Run()
                asyncio.run(_chaos(state, replicas, cluster, store, url, receiver, n_jobs, submit_over_s, deadline_s))
                finals = _finals(replicas, state)
                orphans = _orphans(url, state)
            finally:
                for r in replicas.values():
                    r.stop()
            logs = {name: r.log() for name, r in replicas.items()}
    finally:
        receiver.close()
        if store is not None:
            store.close()
    _report(sec, state, finals, orphans, logs, receiver, n_jobs, mode, store_why)


async def _chaos(
    state: Run,
    replicas: dict[str, ServerProcess],
    cluster: Any,
    store: Any,
    db_url: str,
    receiver: DeliveryReceiver,
    n_jobs: int,
    submit_over_s: float,
    deadline_s: float,
) -> None:
    """Submitters, /status pollers, the balancer's checks and the chaos
    itself, until every job has ended (or the deadline) and every planned
    disruption happened; all replicas are up again when it returns."""
    balancer = Balancer({name: r.url for name, r in replicas.items()})
    stop = asyncio.Event()
    submitted = asyncio.Event()
    finished = asyncio.Event()
    checks = asyncio.create_task(balancer.watch(stop))
    ready_by = time.monotonic() + 30
    while len(balancer.up) < len(replicas):  # the first round of checks
        if time.monotonic() > ready_by:
            raise RuntimeError(f"only {sorted(balancer.up)} of the replicas pass the health check")
        await asyncio.sleep(0.05)
    state.t0 = time.monotonic()
    state.mark(f"start: {n_jobs} jobs over {submit_over_s:.0f} s to replicas {', '.join(sorted(balancer.up))}")
    helpers = [asyncio.create_task(_status_poller(i, state, balancer, stop)) for i in range(STATUS_POLLERS)] + [
        asyncio.create_task(_lag(state, stop)),
        asyncio.create_task(_watch_db(state, db_url, submitted, finished, stop)),
    ]
    submitters = asyncio.gather(*_submitters(state, balancer, receiver, n_jobs, submit_over_s), return_exceptions=False)
    chaos = asyncio.create_task(_disrupt(state, replicas, cluster, store, finished, deadline_s))
    try:
        await submitters
        state.submitted_by_s = state.now()
        state.mark(f"all {len(state.accepted)} jobs accepted")
        submitted.set()
        await chaos
        # Past the deadline, jobs still queued will not call back: no long wait for them.
        await _callbacks_in(state, receiver, 120.0 if finished.is_set() else 10.0)
    finally:
        stop.set()
        chaos.cancel()
        await asyncio.gather(checks, *helpers, chaos, return_exceptions=True)


def _submitters(state: Run, balancer: Balancer, receiver: DeliveryReceiver, n_jobs: int, over_s: float) -> list[Any]:
    """SUBMITTERS clients sending ``n_jobs`` jobs paced over ``over_s``, each to
    the next replica in rotation; a 503 or a connection error is sent again
    (to the next replica) after RETRY_S, as a real client would."""
    audio = CLIP.read_bytes()
    turn = itertools.count()
    # No keep-alive: a pooled connection to a killed replica would fail a
    # request that never reached anyone and read as "may have been received".
    limits = httpx.Limits(max_keepalive_connections=0)

    async def one(client: httpx.AsyncClient) -> None:
        while (i := next(turn)) < n_jobs:
            await asyncio.sleep(max(0.0, state.t0 + i * over_s / n_jobs - time.monotonic()))
            data = {"cache": "false"}
            if i % CALLBACK_EVERY == 0:
                data["callback_url"] = receiver.url
            while True:
                name = balancer.pick()
                if name is None:
                    state.refusals["no replica in rotation"] += 1
                    await asyncio.sleep(RETRY_S)
                    continue
                try:
                    r = await client.post(
                        balancer.urls[name] + "/transcribe", files={"file": (CLIP.name, audio, "audio/wav")}, data=data
                    )
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    state.refusals["connection refused or timed out (not sent)"] += 1
                    balancer.failed(name)
                except httpx.TransportError as exc:  # sent, perhaps received: a job may exist unanswered
                    state.refusals[f"no answer after sending ({type(exc).__name__})"] += 1
                    balancer.failed(name)
                else:
                    if r.status_code == 202:
                        state.accepted[r.json()["job_id"]] = "callback_url" in data
                        break
                    if r.status_code != 503:
                        raise RuntimeError(f"POST /transcribe to {name}: {r.status_code} {r.text[:300]}")
                    state.refusals[f"503 {_code(r)}"] += 1
                await asyncio.sleep(RETRY_S)

    async def client_of() -> None:
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await one(client)

    return [client_of() for _ in range(SUBMITTERS)]


def _code(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "(no code)"


async def _status_poller(i: int, state: Run, balancer: Balancer, stop: asyncio.Event) -> None:
    """GET /status/{a random accepted job} every STATUS_EVERY_S on the next
    replica in rotation, one keep-alive connection per replica; the time to
    connect is kept apart from the time the request then took."""
    rng = random.Random(i)
    conns: dict[str, RawHttp] = {}
    await asyncio.sleep(rng.random() * STATUS_EVERY_S)
    try:
        while not stop.is_set():
            name = balancer.pick()
            if name is not None and state.accepted:
                job = rng.choice(list(state.accepted))
                conn = conns.setdefault(name, RawHttp(balancer.urls[name]))
                t = time.perf_counter()
                try:
                    code, _ = await asyncio.wait_for(conn.get(f"/status/{job}"), STATUS_TIMEOUT_S)
                    total = time.perf_counter() - t
                    age = time.monotonic() - balancer.joined.get(name, state.t0)
                    state.status.append((state.now(), conn.connect_s, total - conn.connect_s, code, name, age))
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                    state.status_errors[type(exc).__name__] += 1
                    balancer.failed(name)
                    await conn.close()
            await asyncio.sleep(STATUS_EVERY_S)
    finally:
        for conn in conns.values():
            await conn.close()


async def _lag(state: Run, stop: asyncio.Event) -> None:
    """How late this client's own event loop wakes: part of every latency it measures."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        state.lag.append(time.perf_counter() - t - 0.01)


async def _watch_db(
    state: Run, db_url: str, submitted: asyncio.Event, finished: asyncio.Event, stop: asyncio.Event
) -> None:
    """Every second, the jobs by status straight from PostgreSQL (skipped while
    it is away); ``finished`` once everything is submitted and nothing is left
    queued or running. Prints progress every 15 s."""
    last_print = 0.0
    while not stop.is_set():
        try:
            counts = await asyncio.to_thread(_counts, db_url)
        except Exception:  # noqa: BLE001 -- PostgreSQL is away: next time
            counts = None
        if counts is not None:
            left = sum(v for k, v in counts.items() if k not in FINISHED)
            if state.now() - last_print >= 15:
                last_print = state.now()
                state.mark(f"jobs {dict(sorted(counts.items()))}, accepted {len(state.accepted)}")
            if submitted.is_set() and left == 0 and not finished.is_set():
                state.finished_by_s = state.now()
                state.mark("every job has ended")
                finished.set()
        await asyncio.sleep(1.0)


def _counts(db_url: str) -> dict[str, int]:
    with psycopg_connect(db_url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


async def _disrupt(
    state: Run,
    replicas: dict[str, ServerProcess],
    cluster: Any,
    store: Any,
    finished: asyncio.Event,
    deadline_s: float,
) -> None:
    """SIGKILL a replica every KILL_EVERY_S (the next in turn that is running)
    and start it again at once; halt PostgreSQL at PG_AT_S and the bucket at
    S3_AT_S, each for OUTAGE_S, while the kills go on. Ends once every job
    has ended and each disruption happened, or at the deadline; waits for
    the restarts."""
    names = itertools.cycle(sorted(replicas))
    restarting: dict[str, asyncio.Task[None]] = {}
    planned = {"PostgreSQL (pg_ctl stop -m fast)": (PG_AT_S, cluster.halt, cluster.start)}
    if store is not None:
        planned["the object store (SIGKILL)"] = (S3_AT_S, store.stop, store.start)
    outages: dict[str, asyncio.Task[None]] = {}
    next_kill = KILL_EVERY_S
    kills = 0

    def done() -> bool:
        outages_over = len(outages) == len(planned) and all(t.done() for t in outages.values())
        return finished.is_set() and outages_over and kills >= 3

    while not done() and state.now() < deadline_s:
        for what, (at, stop, start) in planned.items():
            if what not in outages and state.now() >= at:
                outages[what] = asyncio.create_task(_outage(state, what, stop, start))
        if state.now() >= next_kill:
            while next_kill <= state.now():  # ticks missed while a kill waited are skipped, not bunched
                next_kill += KILL_EVERY_S
            victim = next((n for n in itertools.islice(names, len(replicas)) if n not in restarting), None)
            if victim is not None:
                await asyncio.to_thread(replicas[victim].kill)
                kills += 1
                state.mark(f"replica {victim} killed (SIGKILL), starting it again")
                restarting[victim] = asyncio.create_task(_restart(state, victim, replicas[victim], deadline_s))
        for name in [n for n, task in restarting.items() if task.done()]:
            restarting.pop(name).result()  # a replica that could not start again ends the run
        await asyncio.sleep(0.1)
    if not finished.is_set():
        state.mark(f"DEADLINE: jobs still unfinished after {deadline_s:.0f} s")
    await asyncio.gather(*restarting.values(), *outages.values())


async def _outage(state: Run, what: str, stop: Callable[[], object], start: Callable[[], object]) -> None:
    state.mark(f"stopping {what} for {OUTAGE_S:.0f} s")
    await asyncio.to_thread(stop)
    await asyncio.sleep(OUTAGE_S)
    t = time.monotonic()
    await asyncio.to_thread(start)
    state.mark(f"{what.split(' (')[0]} started again (its start took {time.monotonic() - t:.1f} s)")


async def _restart(state: Run, name: str, replica: ServerProcess, deadline_s: float) -> None:
    """Start a killed replica again, trying again while it cannot start (e.g. the database is away)."""
    t = time.monotonic()
    while True:
        try:
            await asyncio.to_thread(replica.start, 180)
            break
        except RuntimeError as exc:
            said = [ln for ln in str(exc).splitlines() if ln.strip()]  # its log's last line says why
            state.start_failures.append(f"{name} at {state.now():.1f} s: {said[0]} {said[-1][-300:]}")
            if state.now() > deadline_s:
                raise
            await asyncio.sleep(1.0)
    state.restarts_s.append(time.monotonic() - t)
    state.mark(f"replica {name} ready again after {time.monotonic() - t:.1f} s")


async def _callbacks_in(state: Run, receiver: DeliveryReceiver, timeout: float) -> None:
    """Wait until every callback job has been called back (or ``timeout``),
    then 3 s more for a repeat."""
    wanted = [j for j, cb in state.accepted.items() if cb]
    deadline = time.monotonic() + timeout
    while any(j not in receiver.deliveries for j in wanted) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)
    state.mark(f"callbacks in for {sum(j in receiver.deliveries for j in wanted)} of {len(wanted)} jobs")


def _finals(replicas: dict[str, ServerProcess], state: Run) -> dict[str, dict[str, Any]]:
    """Every accepted job's record as a replica answers it after the run."""
    out = {}
    with httpx.Client(base_url=replicas["a"].url, timeout=60) as client:
        for job_id in state.accepted:
            r = client.get(f"/status/{job_id}")
            out[job_id] = r.json() if r.status_code == 200 else {"status": f"HTTP {r.status_code}"}
    return out


def _orphans(db_url: str, state: Run) -> list[str]:
    """Jobs in the database that no client was answered 202 for (a submission
    whose answer was lost in a kill, then sent again)."""
    with psycopg_connect(db_url) as conn:
        rows = conn.execute("SELECT job_id FROM jobs").fetchall()
    return [r[0] for r in rows if r[0] not in state.accepted]


def _completions(logs: dict[str, str]) -> collections.Counter[str]:
    """``completed`` job events (``--log-format json``) per job id, over every replica's log."""
    found: collections.Counter[str] = collections.Counter()
    for log in logs.values():
        for line in log.splitlines():
            if '"event": "completed"' in line:
                found[json.loads(line)["job_id"]] += 1
    return found


def _histories(logs: dict[str, str], job_ids: list[str]) -> dict[str, list[str]]:
    """Every job event of these jobs, over all replicas: time, replica, event, attempt."""
    wanted = set(job_ids)
    found: dict[str, list[str]] = {j: [] for j in job_ids}
    for name, log in logs.items():
        for line in log.splitlines():
            if '"job_id"' not in line:
                continue
            with contextlib.suppress(ValueError):
                r = json.loads(line)
                if r.get("job_id") in wanted:
                    found[r["job_id"]].append(
                        f"{r['time']} {name} {r.get('event')} attempt={r.get('attempt')}"
                        f"{' recovered' if r.get('recovered') else ''}"
                    )
    return {j: sorted(v) for j, v in found.items()}


def _ending(record: dict[str, Any]) -> str:
    return f"{record.get('status')}" + (f" ({record['error']})" if record.get("error") else "")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _report(
    sec: Section,
    state: Run,
    finals: dict[str, dict[str, Any]],
    orphans: list[str],
    logs: dict[str, str],
    receiver: DeliveryReceiver,
    n_jobs: int,
    mode: str,
    store_why: str,
) -> None:
    completions = _completions(logs)
    accepted = len(state.accepted)
    # Once: the database ended it completed, and no second run reached its end
    # (a run fenced off logs "lost"). No event at all is a figure of its own.
    once = [j for j, f in finals.items() if f.get("status") == "completed" and completions[j] <= 1]
    twice = [j for j in finals if completions[j] > 1]
    lost = [j for j, f in finals.items() if f.get("status") != "completed"]
    unlogged = [j for j, f in finals.items() if f.get("status") == "completed" and completions[j] == 0]
    wrong_text = [
        j for j, f in finals.items() if f.get("status") == "completed" and not WORDS <= _words(f.get("transcript", ""))
    ]
    cb_jobs = [j for j, cb in state.accepted.items() if cb]
    ids = {j: set(receiver.deliveries.get(j, [])) for j in cb_jobs}
    one_id = [j for j in cb_jobs if len(ids[j]) == 1]
    tracebacks = {name: sum(TRACEBACK in line for line in log.splitlines()) for name, log in logs.items()}
    first_kill = next((t for t, what in state.timeline if "killed" in what), float("inf"))
    calm = [s for s in state.status if s[0] < first_kill]
    rough = [s for s in state.status if s[0] >= first_kill]
    server = [s[2] * 1000 for s in rough]
    calm_server = [s[2] * 1000 for s in calm] or [float("nan")]
    connects = [s[1] * 1000 for s in state.status if s[1] > 0]
    totals = [(s[1] + s[2]) * 1000 for s in rough]
    n503 = sum(v for k, v in state.refusals.items() if k.startswith("503"))
    conn_errors = sum(v for k, v in state.refusals.items() if not k.startswith(("503", "no replica")))
    p50, p99, top = (pct(server, 50), pct(server, 99), max(server)) if server else (float("nan"),) * 3

    sec.add(
        "jobs answered 202 and completed exactly once", len(once), "jobs", "answered 202", accepted,
        len(once) / accepted if accepted else None, "once/accepted", f"{n_jobs} of {n_jobs}",
        len(once) == accepted == n_jobs,
    )  # fmt: skip
    sec.add("jobs lost (answered 202, not completed at the end)", len(lost), "jobs", "", None, None, "", "0", not lost)
    sec.add("jobs completed more than once (completed events in the logs)", len(twice), "jobs", "", None, None, "", "0",
            not twice)  # fmt: skip
    sec.add(
        "callback jobs with exactly one delivery id", len(one_id), "jobs", "callback jobs", len(cb_jobs),
        len(one_id) / len(cb_jobs) if cb_jobs else None, "", "all", len(one_id) == len(cb_jobs),
    )  # fmt: skip
    sec.add("completed jobs with no completed event in any log", len(unlogged), "jobs", "", None, None, "", "", None)
    sec.add("submissions answered 503, sent again", n503, "", "", None, None, "", "", None)
    sec.add("submissions with a connection error, sent again", conn_errors, "", "", None, None, "", "", None)
    sec.add(
        "/status p50 while replicas die, time after connecting", p50, "ms", "before the first kill",
        pct(calm_server, 50), p50 / pct(calm_server, 50), "chaos/calm", "", None,
    )  # fmt: skip
    sec.add(
        "/status p99 while replicas die, time after connecting", p99, "ms", "before the first kill",
        pct(calm_server, 99), p99 / pct(calm_server, 99), "chaos/calm", "< 100 ms", p99 < 100,
    )  # fmt: skip
    sec.add(
        "/status max while replicas die, time after connecting", top, "ms", "before the first kill",
        max(calm_server), top / max(calm_server), "chaos/calm", "< 1000 ms", top < 1000,
    )  # fmt: skip
    sec.add(
        "/status connect time (new connections), max", max(connects) if connects else float("nan"), "ms",
        "p99", pct(connects, 99) if connects else None, None, "", "", None,
    )  # fmt: skip
    sec.add("log records with a traceback, all replicas", sum(tracebacks.values()), "", "", None, None, "", "", None)

    kills = sum("killed (SIGKILL)" in what for _, what in state.timeline if what.startswith("replica"))
    sec.notes.append(
        f"storage: {'three local folders and one S3 bucket (SeaweedFS)' if mode == 'S3' else 'ONE SHARED FOLDER, no S3 (' + store_why + ')'}; "
        f"{kills} kills, PostgreSQL stopped {OUTAGE_S:.0f} s once"
        + (f", the bucket {OUTAGE_S:.0f} s once" if mode == "S3" else "")
        + f"; restarts took {min(state.restarts_s, default=0):.1f}-{max(state.restarts_s, default=0):.1f} s"
        + (f", {len(state.start_failures)} failed starts" if state.start_failures else "")
    )  # fmt: skip
    sec.notes.append(
        f"jobs: {n_jobs} sent, 1 in {CALLBACK_EVERY} with a callback, paced over {state.submitted_by_s:.0f} s; all ended "
        + (f"at {state.finished_by_s:.0f} s" if state.finished_by_s is not None else "NEVER (deadline)")
        + f"; lost by final status and error {dict(collections.Counter(_ending(finals[j]) for j in lost))}; "
        f"wrong words {len(wrong_text)}; "
        f"jobs in the database no client was answered 202 for {len(orphans)}"
    )  # fmt: skip
    sec.notes.append(
        f"callbacks: {sum(len(v) for v in receiver.deliveries.values())} POSTs for {len(cb_jobs)} jobs; "
        f"none for {sum(not ids[j] for j in cb_jobs)}, 2+ delivery ids for {sum(len(ids[j]) > 1 for j in cb_jobs)}"
    )
    sec.notes.append(
        f"refusals: {dict(state.refusals)}; /status: {len(state.status)} answers "
        f"({sum(s[3] != 200 for s in state.status)} not 200), no answer {dict(state.status_errors)}; "
        f"max including connect {max(totals, default=float('nan')):.0f} ms; client loop lag p99 {pct(state.lag, 99) * 1000:.1f} ms"
    )  # fmt: skip
    worst = sorted(state.status, key=lambda x: -x[2])[:5]
    sec.notes.append(
        "slowest /status answers (time after connecting; replica, seconds since it came into rotation, at): "
        + ", ".join(f"{x[2] * 1000:.0f} ms ({x[4]}, {x[5]:.1f} s, at {x[0]:.0f} s)" for x in worst)
    )
    sec.notes.append(
        f"load balancer as the clients' and pollers' view: a replica is in rotation once GET /health (every {CHECK_S} s, "
        f"{CHECK_TIMEOUT_S} s to answer) says model_loaded (or 503 database/storage away), out on a failed check or any "
        "connection error or timeout (as nginx max_fails=1); submissions round-robin over it, no keep-alive; "
        f"{STATUS_POLLERS} /status pollers every {STATUS_EVERY_S} s, one keep-alive connection per replica"
    )  # fmt: skip
    sec.details.update(
        mode=mode, storage_note=store_why, timeline=state.timeline, refusals=dict(state.refusals),
        status_samples=state.status, status_errors=dict(state.status_errors), restarts_s=state.restarts_s,
        start_failures=state.start_failures, tracebacks=tracebacks, lost={j: finals[j] for j in lost},
        twice={j: completions[j] for j in twice},
        histories=_histories(logs, (twice + lost + unlogged)[:20]),
        finals_of_odd={j: {k: finals[j].get(k) for k in ("status", "attempts", "started_at", "finished_at", "error")}
                       for j in (twice + lost + unlogged)[:20]}, wrong_text=wrong_text, orphans=orphans,
        delivery_ids={j: sorted(v) for j, v in ids.items() if len(v) != 1}, bad_callbacks=receiver.bad,
        attempts=dict(collections.Counter(f.get("attempts") for f in finals.values())),
        traceback_heads=_traceback_heads(logs),
    )  # fmt: skip


def _traceback_heads(logs: dict[str, str]) -> dict[str, int]:
    """What the tracebacks were: the message and exception line of each, counted."""
    heads: collections.Counter[str] = collections.Counter()
    for log in logs.values():
        lines = log.splitlines()
        for i, line in enumerate(lines):
            if TRACEBACK not in line:
                continue
            try:  # a JSON log line holds the whole traceback in its "exception" field
                record = json.loads(line)
                head = f"{record.get('message', '')[:80]} / {str(record.get('exception', '')).strip().splitlines()[-1]}"
            except (ValueError, AttributeError, IndexError):  # plain: the first line after it not indented
                head = next((ln for ln in lines[i + 1 :] if ln and not ln[0].isspace()), "?")
            heads[head[:200]] += 1
    return dict(heads.most_common(20))
