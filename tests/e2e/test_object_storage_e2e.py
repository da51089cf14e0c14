"""Three real replicas (``whisper-mcp serve``, the real tiny.en model) that
share nothing but PostgreSQL and an S3 bucket (``--storage-url``) on a real
S3-compatible server (SeaweedFS, tests/s3.py), each with its own local
``--storage`` folder, as replicas on separate machines have them.

What docs/replicas.md's object storage section promises: a chunked MCP
upload whose chunks land on three replicas, a one-time upload URL made on
one replica and used on another, downloads in every format from every
replica, each callback once with one delivery id, an event stream with
partial segments from a replica that is not running the job while that
replica is killed (SIGKILL) and the job completes on another, a cancel
through another replica, audio gone from the bucket once its job ends, and
the object store stopped for about 20 s during a job: routes that need it
answer 503 in words, and the job completes once it is back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp
import psycopg
import pytest

from whisper_mcp.formats import FORMATS
from whisper_mcp.queue.objects import ObjectStore, connect
from whisper_mcp.testing import PostgresCluster

from helpers import (
    FIXTURES,
    LONG_AUDIO,
    CallbackReceiver,
    ServerProcess,
    free_port,
    submit,
    wait_done,
    wait_ready,
    words,
)
from s3 import SeaweedFS

pytestmark = pytest.mark.e2e

NAMES = ("a", "b", "c")
LEASE = ("--lease-seconds", "3", "--heartbeat-seconds", "1")
THREADS = ("--threads", "1")  # three replicas on 2 cores
SHORT_WORDS = {"hello", "world", "testing"}
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
LONG_WORDS = {"weekly", "planning", "meeting", "budget", "finance", "december"}


@dataclass
class Cluster:
    replicas: dict[str, ServerProcess]
    folders: dict[str, Path]
    database_url: str
    receiver: CallbackReceiver
    public_url: str
    seaweedfs: SeaweedFS
    bucket: ObjectStore  # the bucket as the replicas see it, read by the tests
    alive: list[str] = field(default_factory=lambda: list(NAMES))
    done: list[str] = field(default_factory=list)  # completed jobs, for later tests

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.replicas[name].url, timeout=60)

    def row(self, job_id: str) -> dict[str, Any]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT status, lease_owner, attempts FROM jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
        assert found is not None, job_id
        return dict(zip(("status", "lease_owner", "attempts"), found, strict=True))

    def wait_row(self, job_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not predicate(row := self.row(job_id)):
            assert time.monotonic() < deadline, f"{job_id}: {row}"
            time.sleep(0.02)
        return row

    def objects(self, folder: str) -> list[str]:
        return [path for path, _ in self.bucket._list(folder)]

    def wait_empty(self, *folders: str, timeout: float = 10) -> None:
        """Until the bucket holds nothing under ``folders``: a job's files go
        a moment after its status changes."""
        deadline = time.monotonic() + timeout
        while left := [path for folder in folders for path in self.objects(folder)]:
            assert time.monotonic() < deadline, left
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresCluster, seaweedfs: SeaweedFS, bucket_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("object-storage")
    database_url = postgres.database()
    public_url = f"http://127.0.0.1:{free_port()}"  # a load balancer's address: URLs name it
    receiver = CallbackReceiver()
    env = {**os.environ, **seaweedfs.env}
    folders = {name: root / f"local-{name}" for name in NAMES}  # one each: nothing shared on disk
    replicas = {
        name: ServerProcess(
            folders[name], root / f"replica-{name}.log",
            "--database-url", database_url, "--storage-url", bucket_url, "--replica-id", name,
            *LEASE, *THREADS, "--public-url", public_url, "--log-format", "json",
            env=env,
        )
        for name in NAMES
    }  # fmt: skip
    try:
        # Started together: their migrations race for the advisory lock, as in a real roll-out.
        with ThreadPoolExecutor(len(replicas)) as pool:
            for started in [pool.submit(r.start, 180) for r in replicas.values()]:
                started.result()
        yield Cluster(
            replicas, folders, database_url, receiver, public_url, seaweedfs,
            ObjectStore(connect(bucket_url, environ=seaweedfs.env), root / "test-scratch"),
        )  # fmt: skip
    finally:
        for replica in replicas.values():
            replica.stop()
        receiver.close()


async def tool(url: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One MCP tool call on one replica (stateless HTTP: each call may go
    anywhere); its structured answer. Bytes in ``arguments`` go as base64."""
    sent = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in arguments.items()}
    async with mcp.Client(f"{url}/mcp") as session:
        result = await session.call_tool(name, sent)
    assert not result.is_error and result.structured_content is not None, result
    return result.structured_content


def events(client: httpx.Client, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``GET /jobs/{id}/events`` as (event, data) pairs."""
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(10, read=120)) as answer:
        assert answer.status_code == 200, answer.read()
        event = ""
        for line in answer.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                yield event, json.loads(line.removeprefix("data:"))


def test_uploads_over_mcp_and_one_time_urls_spread_over_replicas(cluster: Cluster) -> None:
    """A chunked upload whose chunks land on three replicas (last first),
    submitted on a fourth request; a one-time URL made on one replica and
    used on another; each downloadable in every format, the same from every
    replica; each callback once, with one delivery id."""
    urls = [cluster.replicas[n].url for n in NAMES]
    callback = cluster.receiver.url + "/done"
    audio = (FIXTURES / "speech.wav").read_bytes()

    async def scenario() -> tuple[str, str]:
        begun = await tool(urls[0], "begin_upload", {"size": len(audio), "sha256": hashlib.sha256(audio).hexdigest()})
        step = -(-len(audio) // 3)
        for url, offset in zip(urls, reversed(range(0, len(audio), step)), strict=True):
            arguments = {
                "upload_id": begun["upload_id"],
                "offset": offset,
                "data_base64": audio[offset : offset + step],
            }
            await tool(url, "upload_chunk", arguments)
        chunked = await tool(
            urls[1], "transcribe_wav", {"upload_id": begun["upload_id"], "cache": False, "callback_url": callback}
        )
        made = await tool(urls[2], "create_upload_url", {"filename": "short.wav", "callback_url": callback})
        return chunked["job_id"], made

    chunked_id, made = anyio.run(scenario)
    path = made["upload_url"].removeprefix(cluster.public_url)
    with cluster.client("a") as a:
        sent = a.put(path, content=(FIXTURES / "short.wav").read_bytes())
        assert sent.status_code == 202, sent.text
    expected = {chunked_id: SPEECH_WORDS, made["job_id"]: SHORT_WORDS}
    for job_id, wanted in expected.items():
        with cluster.client("c") as c:
            done = wait_done(c, job_id)
        assert done["status"] == "completed" and wanted <= words(done["transcript"]), done
        for fmt in FORMATS:
            answers = set()
            for name in NAMES:
                with cluster.client(name) as c:
                    answer = c.get(f"/download/{job_id}", params={"format": fmt})
                    assert answer.status_code == 200 and answer.text, (name, fmt, answer.text)
                    answers.add(answer.text)
            assert len(answers) == 1, (fmt, answers)
        cluster.done.append(job_id)

    # Each callback once: a little longer than the deliveries take, for a duplicate.
    deadline = time.monotonic() + 30
    while any(not cluster.receiver.bodies(j) for j in expected):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    for job_id in expected:
        [body] = cluster.receiver.bodies(job_id)
        [(_, headers, _, _)] = [c for c in cluster.receiver.calls if json.loads(c[2])["job_id"] == job_id]
        assert headers["x-whisper-mcp-delivery"] == body["delivery_id"] and body["status"] == "completed"

    # The bytes are in the bucket; each replica's own folder holds scratch only.
    assert len(cluster.objects("results")) >= 2
    for folder in cluster.folders.values():
        assert not [p for p in folder.rglob("*") if p.is_file() and p.name != "jobs.sqlite3"], list(folder.rglob("*"))


def test_a_stream_on_one_replica_follows_a_job_through_the_kill_of_its_runner(cluster: Cluster) -> None:
    """An event stream on a replica that is not running long.mp3 shows its
    segments as they are decoded (partial transcripts, from the bucket); the
    replica running it is killed (SIGKILL) after its first segments; a
    survivor takes the job over, and the stream ends with it completed."""
    with cluster.client("a") as a:
        job_id = submit(a, LONG_AUDIO, callback_url=cluster.receiver.url + "/done")["job_id"]
    runner = cluster.wait_row(job_id, lambda r: r["status"] == "processing")["lease_owner"]
    watcher = next(n for n in NAMES if n != runner)
    seen: list[str] = []
    final: dict[str, Any] = {}
    with cluster.client(watcher) as c:
        for event, data in events(c, job_id):
            seen.append(event)
            if event == "segment" and runner in cluster.alive:
                cluster.replicas[runner].kill()
                cluster.alive.remove(runner)
            if event == "status":
                final = data
    assert final["status"] == "completed" and final["attempts"] == 2, final
    assert LONG_WORDS <= words(final["transcript"]), final["transcript"]
    assert seen.count("segment") >= 2, seen
    assert cluster.row(job_id)["lease_owner"] in (None, *cluster.alive)
    deadline = time.monotonic() + 30
    while not cluster.receiver.bodies(job_id):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    assert [b["status"] for b in cluster.receiver.bodies(job_id)] == ["completed"]  # once
    cluster.done.append(job_id)
    # Ended: its audio and partial transcript are gone from the bucket.
    cluster.wait_empty("audio", "partial")


def test_a_cancel_through_another_replica(cluster: Cluster) -> None:
    with cluster.client(cluster.alive[0]) as c:
        job_id = submit(c, LONG_AUDIO)["job_id"]
    cluster.wait_row(job_id, lambda r: r["status"] == "processing")
    runner = cluster.row(job_id)["lease_owner"]
    other = next(n for n in cluster.alive if n != runner)
    with cluster.client(other) as c:
        assert c.delete(f"/jobs/{job_id}").status_code == 200
        assert wait_done(c, job_id)["status"] == "cancelled"
    cluster.wait_empty("audio", "speakers", "partial")


def test_audio_urls_in_the_bucket_are_read_with_the_stores_credentials(cluster: Cluster, bucket_url: str) -> None:
    """An s3:// audio_url is read with the replicas' own credentials; a key
    that is not there fails the job in words naming the bucket."""
    import obstore

    bucket = bucket_url.removeprefix("s3://").split("/", 1)[0]
    obstore.put(connect(f"s3://{bucket}", environ=cluster.seaweedfs.env), "inputs/speech.wav", FIXTURES / "speech.wav")
    with cluster.client(cluster.alive[-1]) as b:
        sent = [
            b.post("/transcribe", files={"audio_url": (None, f"s3://{bucket}/inputs/{name}")})
            for name in ("speech.wav", "nothing.wav")
        ]
        assert [answer.status_code for answer in sent] == [202, 202], [answer.text for answer in sent]
        heard, failed = (wait_done(b, answer.json()["job_id"]) for answer in sent)
    assert heard["status"] == "completed" and SPEECH_WORDS <= words(heard["transcript"]), heard
    assert failed["status"] == "failed" and bucket in failed["error"] and "no such object" in failed["error"], failed


def test_the_object_store_away_for_20_s_during_a_job(cluster: Cluster) -> None:
    """Stopped while long.mp3 decodes: every route that needs it answers 503
    in words, quickly; started again, the job completes."""
    name = cluster.alive[0]
    with cluster.client(name) as c:
        job_id = submit(c, LONG_AUDIO)["job_id"]
        cluster.wait_row(job_id, lambda r: r["status"] == "processing")
        logged = len(cluster.replicas[name].log())
        cluster.seaweedfs.stop()
        stopped = time.monotonic()
        try:
            # The first request finds the store away (within the client's retries) ...
            assert c.get(f"/download/{cluster.done[0]}").status_code == 503
            # ... and from then on every route that needs it answers 503 at once.
            for method, path, kwargs in [
                ("GET", f"/download/{cluster.done[0]}", {}),
                ("GET", f"/status/{job_id}", {}),
                ("GET", "/health", {}),
                ("POST", "/transcribe", {"files": {"file": ("short.wav", (FIXTURES / "short.wav").read_bytes())}}),
            ]:
                asked = time.monotonic()
                answer = c.request(method, path, **kwargs)
                took = time.monotonic() - asked
                assert answer.status_code == 503, (path, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "storage_unavailable" and "object store is not available" in error["message"]
                assert took < 1.0, (path, took)
            time.sleep(max(0.0, 5 - (time.monotonic() - stopped)))
        finally:
            cluster.seaweedfs.start()  # SeaweedFS takes 15-20 s to answer again after a kill
        print(f"object store away for {time.monotonic() - stopped:.1f} s")
        wait_ready(c, 10, "the store's return went unnoticed")  # noticed within a second
        done = wait_done(c, job_id, timeout=240)
        assert done["status"] == "completed" and LONG_WORDS <= words(done["transcript"]), done
        assert c.get(f"/download/{cluster.done[0]}").status_code == 200
    # One line when the outage began and one when it ended; no tracebacks.
    during = cluster.replicas[name].log()[logged:]
    assert "Traceback" not in during, during
    assert during.count("answering 503 until it is back") == 1 and during.count("answering again after") == 1, during
