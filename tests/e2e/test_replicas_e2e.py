"""Three real replicas (``whisper-mcp serve`` processes with the real tiny.en
model) on one PostgreSQL database and ONE shared storage folder, each with
its own ``--replica-id`` and short leases (3 s, heartbeat 1 s).

What a user of docs/replicas.md relies on: MCP over
streamable HTTP with the official SDK alternating replicas on every request
(both handshakes), a chunked upload whose chunks land on different
replicas, a one-time upload URL made on one replica and used on another, a
cancel sent through a replica that is not running the job, the documented
nginx configuration in front of the three, and ``kill -9`` of the replica
running a long job: the job is reclaimed by a survivor, every job completes
exactly once with the right text, each callback arrives once, a waiter on
one survivor is woken when the job ends on the other, and both survivors
answer identically for every job.

Leases, fencing and claim races are tested without the model in
tests/unit/test_leases.py.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import httpx2
import mcp
import psycopg
import pytest
from mcp.client.streamable_http import streamable_http_client

from whisper_mcp.testing import PostgresCluster

from helpers import FIXTURES, LONG_AUDIO, CallbackReceiver, ServerProcess, free_port, submit, wait_done, words
from nginx_conf import NGINX, start_nginx

pytestmark = pytest.mark.e2e

NAMES = ("a", "b", "c")
LEASE = ("--lease-seconds", "3", "--heartbeat-seconds", "1")
# Three replicas share 2 cores here: one torch thread each, not two, or they thrash.
THREADS = ("--threads", "1")
SHORT_WORDS = {"hello", "world", "testing"}
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
LONG_WORDS = {"weekly", "planning", "meeting", "budget", "finance", "december"}
FINISHED = ("completed", "failed", "cancelled")


# -- the cluster ------------------------------------------------------------


@dataclass
class Cluster:
    replicas: dict[str, ServerProcess]
    database_url: str
    receiver: CallbackReceiver
    public_url: str  # every replica's --public-url: the load balancer's address
    lb_url: str | None = None  # nginx there, with the documented configuration, when nginx is installed

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.replicas[name].url, timeout=60)

    def row(self, job_id: str) -> dict[str, Any]:
        """The job's row as the database has it (lease owner included)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT status, lease_owner, attempts, progress, cancel_requested FROM jobs WHERE job_id = %s",
                (job_id,),
            )
            row = cur.fetchone()
        assert row is not None, job_id
        return dict(zip(("status", "lease_owner", "attempts", "progress", "cancel_requested"), row, strict=True))

    def wait_row(self, job_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(job_id)
            if predicate(row):
                return row
            assert time.monotonic() < deadline, f"{job_id}: {row}"
            time.sleep(0.02)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Job events (``--log-format json``) in one replica's log."""
        found = []
        for line in self.replicas[name].log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record and "job_id" in record:
                found.append(record)
        return found


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    database_url = postgres.database()
    storage = root / "shared-storage"  # one folder for all three
    lb_port = free_port()
    public_url = f"http://127.0.0.1:{lb_port}"
    receiver = CallbackReceiver()
    replicas = {
        name: ServerProcess(
            storage, root / f"replica-{name}.log",
            "--database-url", database_url, "--replica-id", name, *LEASE, *THREADS,
            "--public-url", public_url, "--log-format", "json",
        )
        for name in NAMES
    }  # fmt: skip
    # Started together: their migrations race for the advisory lock, as in a real roll-out.
    with ThreadPoolExecutor(len(replicas)) as pool:
        started = [pool.submit(r.start, 180) for r in replicas.values()]
        errors = [f.exception() for f in started]
    nginx: subprocess.Popen[bytes] | None = None
    try:
        assert errors == [None] * len(errors), errors
        found = Cluster(replicas, database_url, receiver, public_url)
        if NGINX is not None:
            nginx = start_nginx(root / "nginx", lb_port, [r.port for r in replicas.values()])
            found.lb_url = public_url
        yield found
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for r in replicas.values():
            r.stop()
        receiver.close()


# -- MCP with the official SDK, one replica per request ----------------------


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer in the client: each HTTP request goes to the next replica."""

    def __init__(self, urls: list[str]) -> None:
        self._next = itertools.cycle([httpx2.URL(u) for u in urls])
        self._inner = httpx2.AsyncHTTPTransport()
        self.served: list[str] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = next(self._next)
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        self.served.append(f"{target.host}:{target.port}")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Mcp:
    """The official SDK's client over streamable HTTP, through ``RoundRobin``."""

    def __init__(self, urls: list[str], mode: str) -> None:
        self.balancer = RoundRobin(urls)
        self.mode = mode

    async def __aenter__(self) -> mcp.Client:
        self._http = httpx2.AsyncClient(transport=self.balancer, timeout=httpx2.Timeout(30, read=120))
        await self._http.__aenter__()
        self._client = mcp.Client(streamable_http_client("http://replicas/mcp", http_client=self._http), mode=self.mode)
        return await self._client.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)
        await self._http.__aexit__(*exc)


async def tool(client: mcp.Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result
    assert result.structured_content is not None
    return result.structured_content


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the tests ----------------------------------------------------------------


async def mcp_scenario(urls: list[str], mode: str) -> dict[str, Any]:
    """What an agent does over one MCP session, each request on the next replica."""
    audio = (FIXTURES / "speech.wav").read_bytes()
    balancer = Mcp(urls, mode)
    async with balancer as session:
        handshake = session.session
        if mode == "legacy":
            assert handshake._initialize_result is not None and handshake._discover_result is None
        else:
            assert handshake._discover_result is not None and handshake._initialize_result is None
        assert "transcribe_wav" in {t.name for t in (await session.list_tools()).tools}
        clip = b64((FIXTURES / "short.wav").read_bytes())
        queued = await tool(session, "transcribe_wav", {"audio_base64": clip, "cache": False})
        short = await tool(session, "check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 45})

        begun = await tool(
            session,
            "begin_upload",
            {"filename": "speech.wav", "size": len(audio), "sha256": hashlib.sha256(audio).hexdigest()},
        )
        step = -(-len(audio) // 3)
        chunks = [(offset, audio[offset : offset + step]) for offset in range(0, len(audio), step)]
        answers = []
        for offset, data in reversed(chunks):  # last first: ranges merge in any order
            arguments = {"upload_id": begun["upload_id"], "offset": offset, "data_base64": b64(data)}
            answers.append(await tool(session, "upload_chunk", arguments))
        assert [a.get("complete") for a in answers] == [False] * (len(chunks) - 1) + [True], answers
        job = await tool(session, "transcribe_wav", {"upload_id": begun["upload_id"], "cache": False})
        chunked = await tool(session, "check_transcription_status", {"job_id": job["job_id"], "wait_seconds": 45})
    return {"short": short, "chunked": chunked, "served": balancer.balancer.served}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_mcp_alternating_replicas_both_handshakes(cluster: Cluster, mode: str) -> None:
    """One MCP session whose every HTTP request goes to the next replica, with
    the legacy ``initialize`` handshake and with the new one: a clip queued on
    one replica and waited for on another; a chunked upload whose chunks land
    on three replicas (out of order), then transcribed from a fourth request."""
    urls = [cluster.replicas[n].url for n in NAMES]
    out = anyio.run(mcp_scenario, urls, mode)
    short, chunked = out["short"], out["chunked"]
    assert short["status"] == "completed" and SHORT_WORDS <= words(short["transcript"]), short
    assert chunked["status"] == "completed" and SPEECH_WORDS <= words(chunked["transcript"]), chunked
    assert {u.split("//")[1] for u in urls} == set(out["served"]), out["served"]
    # Any replica answers the same for the job, and the same transcript.
    answers = [cluster.client(n).get(f"/status/{chunked['job_id']}").json() for n in NAMES]
    assert answers[0] == answers[1] == answers[2]
    assert {cluster.client(n).get(f"/download/{chunked['job_id']}").text for n in NAMES} == {chunked["transcript"]}


def test_one_time_upload_url_made_on_one_replica_used_on_another(cluster: Cluster) -> None:
    async def create() -> dict[str, Any]:
        async with mcp.Client(f"{cluster.replicas['a'].url}/mcp", mode="legacy") as session:
            return await tool(session, "create_upload_url", {"filename": "short_48k_24bit.wav"})

    made = anyio.run(create)
    # The URL names --public-url (the load balancer); send it to replica b itself.
    assert made["upload_url"].startswith(f"{cluster.public_url}/upload/"), made
    path = made["upload_url"].removeprefix(cluster.public_url)
    with cluster.client("c") as c:
        assert c.get(f"/status/{made['job_id']}").json()["status"] == "waiting_for_upload"
    with cluster.client("b") as b:
        response = b.put(path, content=(FIXTURES / "short_48k_24bit.wav").read_bytes())
        assert response.status_code == 202, response.text
        assert response.json()["job_id"] == made["job_id"]
    with cluster.client("c") as c:
        assert c.put(path, content=b"again").status_code == 404  # used once, on any replica
        done = wait_done(c, made["job_id"])
    assert done["status"] == "completed" and SHORT_WORDS <= words(done["transcript"]), done


def test_cancel_through_another_replica_stops_the_running_job(cluster: Cluster) -> None:
    with cluster.client("a") as a:
        job = submit(a, LONG_AUDIO)
    row = cluster.wait_row(job["job_id"], lambda r: r["status"] != "queued")
    runner = row["lease_owner"]
    assert row["status"] == "processing" and runner in NAMES, row
    other = next(n for n in NAMES if n != runner)
    with cluster.client(other) as c:
        asked = c.delete(f"/jobs/{job['job_id']}")
        assert asked.status_code == 200, asked.text
        assert asked.json()["status"] == "cancelled" or asked.json()["cancel_requested"] is True, asked.json()
        done = wait_done(c, job["job_id"], timeout=60)
    assert done["status"] == "cancelled" and done["error"] == "cancelled on request", done
    assert "transcript" not in done
    # The replica running it stopped it (at its next window), not another.
    # Its log line follows the database's change by a moment: wait for it.
    deadline = time.monotonic() + 10
    while (events := [e["event"] for e in cluster.events(runner) if e["job_id"] == job["job_id"]])[-1] != "cancelled":
        assert time.monotonic() < deadline, events
        time.sleep(0.05)


def test_through_nginx_as_the_docs_configure_it(cluster: Cluster) -> None:
    """The documented nginx configuration (checked with ``nginx -t`` when the
    cluster starts) in front of the three replicas, round-robin: an MCP
    session, an upload URL naming the balancer with the upload streamed
    through it, the wait, and downloads from each replica in turn."""
    if cluster.lb_url is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    lb = cluster.lb_url

    async def scenario() -> tuple[str, dict[str, Any]]:
        async with mcp.Client(f"{lb}/mcp") as session:
            made = await tool(session, "create_upload_url", {"filename": "speech_stereo_44k.wav"})
            assert made["upload_url"].startswith(f"{lb}/upload/"), made
            async with httpx.AsyncClient(timeout=60) as http:
                sent = await http.post(made["upload_url"], content=(FIXTURES / "speech_stereo_44k.wav").read_bytes())
                assert sent.status_code == 202, sent.text
            arguments = {"job_id": made["job_id"], "wait_seconds": 45}
            return made["job_id"], await tool(session, "check_transcription_status", arguments)

    job_id, done = anyio.run(scenario)
    assert done["status"] == "completed" and SPEECH_WORDS <= words(done["transcript"]), done
    with httpx.Client(base_url=lb, timeout=30) as c:
        assert {c.get(f"/download/{job_id}").text for _ in NAMES} == {done["transcript"]}


def test_kill_9_of_the_replica_running_a_long_job(cluster: Cluster) -> None:
    """The replica running long.mp3 is killed mid-transcription while short
    clips queued through all three replicas run. A survivor reclaims the long
    job once its lease runs out; a waiter on the other survivor is woken when
    it ends; every job completes exactly once, with the right text; each
    callback arrives once; the survivors answer identically for every job."""
    callback = {"callback_url": cluster.receiver.url + "/done"}
    clips = {
        "short.wav": SHORT_WORDS,
        "speech.wav": SPEECH_WORDS,
        "speech.mp3": SPEECH_WORDS,
        "speech.flac": SPEECH_WORDS,
    }
    with cluster.client("a") as a:
        long_job = submit(a, LONG_AUDIO, **callback)["job_id"]
    expected = {long_job: LONG_WORDS}
    for name, replica in zip(clips, itertools.cycle(NAMES)):
        with cluster.client(replica) as c:
            expected[submit(c, FIXTURES / name, **callback)["job_id"]] = clips[name]

    # Killed while it runs the job (its lease held, decoding under way).
    row = cluster.wait_row(long_job, lambda r: r["status"] == "processing")
    time.sleep(0.5)
    victim = row["lease_owner"]
    assert row["attempts"] == 1 and victim in NAMES, row
    cluster.replicas[victim].kill()
    killed_at = time.monotonic()
    survivors = [n for n in NAMES if n != victim]

    # Reclaimed by a survivor once the 3 s lease runs out (heartbeats every 1 s).
    rerun = cluster.wait_row(long_job, lambda r: r["attempts"] == 2 and r["status"] != "queued", timeout=30)
    print(f"long job back at work {time.monotonic() - killed_at:.1f} s after the kill: {rerun}")
    owner = rerun["lease_owner"]
    assert owner in survivors or rerun["status"] == "completed", rerun

    # A waiter on the survivor that is not running it wakes when it ends there.
    waiter = next(n for n in survivors if n != owner)

    async def wait_on(name: str) -> tuple[dict[str, Any], float, float, float]:
        async with mcp.Client(f"{cluster.replicas[name].url}/mcp") as session:
            started, started_wall = time.monotonic(), time.time()
            record = await tool(session, "check_transcription_status", {"job_id": long_job, "wait_seconds": 45})
            return record, started_wall, time.monotonic() - started, time.time()

    record, started_wall, waited, returned_at = anyio.run(wait_on, waiter)
    assert record["status"] == "completed", record
    assert waited < 40, waited  # woken by the job's end, not by the 45 s deadline
    if record["finished_at"] > started_wall:  # it ended during the wait (always, on CPU)
        print(f"waiter on {waiter} answered {returned_at - record['finished_at']:.3f} s after the job ended on {owner}")
        assert returned_at - record["finished_at"] < 5, (returned_at, record["finished_at"])
    assert LONG_WORDS <= words(record["transcript"]), record["transcript"]

    # Every job completed, with its words, through either survivor.
    finals = {}
    with cluster.client(survivors[0]) as c:
        for job_id, expected_words in expected.items():
            finals[job_id] = wait_done(c, job_id, timeout=120)
            assert finals[job_id]["status"] == "completed", finals[job_id]
            assert expected_words <= words(finals[job_id]["transcript"]), (job_id, finals[job_id]["transcript"])
    assert finals[long_job]["attempts"] == 2

    # Exactly once: one `completed` event per job over all three logs (the
    # victim's included), and as many runs started as attempts counted.
    # (A run logs its end just after storing it: /status may read it first.)
    deadline = time.monotonic() + 10
    while True:
        events = [e for n in NAMES for e in cluster.events(n)]
        logged = {e["job_id"] for e in events if e["event"] == "completed"}
        if set(finals) <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for job_id, final in finals.items():
        mine = [e["event"] for e in events if e["job_id"] == job_id]
        assert mine.count("completed") == 1, (job_id, mine)
        assert mine.count("started") == final["attempts"], (job_id, mine, final["attempts"])
    assert [
        e.get("attempt") for e in cluster.events(victim) if e["job_id"] == long_job and e["event"] == "started"
    ] == [1]

    # Each callback once: wait until all are delivered, then a little longer for a duplicate.
    deadline = time.monotonic() + 30
    while any(not cluster.receiver.bodies(j) for j in expected):
        assert time.monotonic() < deadline, [j for j in expected if not cluster.receiver.bodies(j)]
        time.sleep(0.1)
    time.sleep(2)
    for job_id, final in finals.items():
        [body] = cluster.receiver.bodies(job_id)
        assert body["status"] == "completed" and body["transcript"] == final["transcript"]

    # Both survivors answer identically: status (callback state settled), transcripts, the list.
    with cluster.client(survivors[0]) as first, cluster.client(survivors[1]) as second:
        for job_id in finals:
            for path in (f"/status/{job_id}", f"/status/{job_id}?format=json"):
                one, two = first.get(path).json(), second.get(path).json()
                assert one == two and one["callback"]["state"] == "delivered", (one, two)
            for fmt in ("txt", "srt", "json"):
                assert (
                    first.get(f"/download/{job_id}?format={fmt}").text
                    == second.get(f"/download/{job_id}?format={fmt}").text
                )
        assert first.get("/jobs?limit=500").json() == second.get("/jobs?limit=500").json()

    # Through the load balancer the dead replica is skipped.
    if cluster.lb_url is not None:
        with httpx.Client(base_url=cluster.lb_url, timeout=30) as lb:
            assert all(lb.get(f"/status/{long_job}").status_code == 200 for _ in range(6))
