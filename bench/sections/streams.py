"""Section streams: a long job with and without 200 event-stream readers on
it (its time, /health latency), and the bytes its partial transcript wrote
against the size of its result; the same bytes for a 2-hour job, replayed
window by window through the partial store."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.clips import concatenated, decoded, write_wav
from bench.context import FIXTURES, Ctx
from bench.pollers import RawHttp
from bench.report import Section
from bench.rss import cpu_times
from bench.service import FINISHED, completed, serving, submit, wait_done
from bench.stats import pct
from whisper_mcp.queue.files import FileStore, new_key

READERS = 200
HEALTH_INTERVAL_S = 0.05  # one /health poller's pause between requests
REPLAY_S = 2 * 3600.0  # the long recording the issue measured


async def read_stream(url: str, path: str, timeout: float) -> bytes:
    """One ``GET path`` on a raw connection, read until the server closes it
    (``Connection: close``): a whole server-sent event stream, as sent."""
    host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        async with asyncio.timeout(timeout):
            while data := await reader.read(1 << 16):
                chunks.append(data)
        return b"".join(chunks)
    finally:
        writer.close()


class PartialWrites(threading.Thread):
    """The bytes a server writes to ``partial/``, seen from outside every
    20 ms: an append-only file (``.jsonl``) wrote its largest size; a file
    rewritten whole after each window (``.json``, releases before) wrote its
    size at each version seen (a lower bound: versions between two looks are missed)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True, name="partial-writes")
        self.folder = folder
        self.appended: dict[str, int] = {}
        self.versions: dict[str, set[tuple[int, int]]] = {}  # rewritten file -> (mtime_ns, size) seen
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in list(self.folder.iterdir()):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                if entry.name.endswith(".jsonl"):
                    self.appended[entry.name] = max(self.appended.get(entry.name, 0), st.st_size)
                elif entry.name.endswith(".json"):
                    self.versions.setdefault(entry.name, set()).add((st.st_mtime_ns, st.st_size))
            self._halt.wait(0.02)

    def stop(self) -> int:
        self._halt.set()
        self.join(2)
        return sum(self.appended.values()) + sum(size for seen in self.versions.values() for _, size in seen)


def written_chars(pid: int) -> int:
    """``wchar`` of /proc/<pid>/io: bytes the process passed to write() (files, pipes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def newest_result(storage: Path) -> Path:
    return max((storage / "results").iterdir(), key=lambda p: p.stat().st_mtime_ns)


async def follow_job(url: str, job_id: str, readers: int, timeout: float) -> dict[str, Any]:
    """While job ``job_id`` runs: ``readers`` event streams on it and one
    /health poller; until a long poll sees the job end."""
    done = asyncio.Event()
    health: list[float] = []

    async def poll_health() -> None:
        conn, first = RawHttp(url), True
        try:
            while not done.is_set():
                t = time.perf_counter()
                code, _ = await conn.get("/health")
                if code == 200 and not first:  # the first request also opens the connection
                    health.append(time.perf_counter() - t)
                first = False
                await asyncio.sleep(HEALTH_INTERVAL_S)
        finally:
            await conn.close()

    async def wait_end() -> dict[str, Any]:
        conn = RawHttp(url)
        try:
            while True:
                _, body = await conn.get(f"/status/{job_id}?wait=50")
                record = json.loads(body)
                if record.get("status") in FINISHED:
                    return record
        finally:
            done.set()
            await conn.close()

    streams = [asyncio.create_task(read_stream(url, f"/jobs/{job_id}/events", timeout)) for _ in range(readers)]
    poller = asyncio.create_task(poll_health())
    async with asyncio.timeout(timeout):
        record = await wait_end()
    await poller
    bodies = await asyncio.gather(*streams, return_exceptions=True)
    return {"record": record, "health": health, "bodies": bodies}


def long_run(srv: Any, client: httpx.Client, wav: Path, readers: int, timeout: float) -> dict[str, Any]:
    """The long job once, with ``readers`` streams on it: its run time, /health
    latencies, what the streams got, and the bytes the server wrote."""
    assert srv.proc is not None
    partial = PartialWrites(srv.storage / "partial")
    partial.start()
    pid = srv.proc.pid
    wchar, cpu, loop_cpu = written_chars(pid), sum(cpu_times(pid)), sum(cpu_times(pid, pid))
    job = submit(client, wav)
    client_cpu = time.process_time()
    try:
        got = asyncio.run(follow_job(srv.url, job["job_id"], readers, timeout))
    finally:
        partial_bytes = partial.stop()
    client_cpu = time.process_time() - client_cpu  # the readers' own CPU: they share the machine
    record = completed(got["record"])
    result = json.loads(newest_result(srv.storage).read_bytes())
    segments = len(result.get("segments") or [])
    bodies = [b for b in got["bodies"] if isinstance(b, bytes)]
    # The last window's segments may come only inside the final status (its transcript).
    streamed = [b.count(b"event: segment\n") for b in bodies] or [0]
    return {
        "job_s": record["finished_at"] - record["started_at"],
        "health": got["health"],
        "readers": readers,
        "readers_complete": sum(b"event: status\n" in b for b in bodies),
        "segments_streamed": [min(streamed), max(streamed)],
        "reader_errors": [repr(b)[:200] for b in got["bodies"] if not isinstance(b, bytes)][:5],
        "segments": segments,
        "partial_bytes": partial_bytes,
        "result_bytes": newest_result(srv.storage).stat().st_size,
        "server_wchar": written_chars(pid) - wchar,
        # The whole server, and its main thread (the event loop: HTTP, streams; inference runs on others).
        "server_cpu_s": sum(cpu_times(pid)) - cpu,
        "loop_cpu_s": sum(cpu_times(pid, pid)) - loop_cpu,
        "client_cpu_s": client_cpu,
    }


def replay(workdir: Path, result: dict[str, Any], audio_s: float) -> dict[str, Any]:
    """``result``'s segments repeated to REPLAY_S of audio and fed one at a
    time, as the default engine reports them, to the partial store
    (FileStore.append_partial, which the queue calls for each report): the
    bytes it wrote, against the size of that 2-hour result. Baseline: what
    the whole-list rewrite of releases before wrote (the JSON of the list so
    far after each segment; computed, not written: it is hundreds of MB)."""
    repeats = max(1, round(REPLAY_S / audio_s))
    every: list[dict[str, Any]] = []
    for r in range(repeats):
        every.extend(
            {**s, "id": len(every) + i, "start": s["start"] + r * audio_s, "end": s["end"] + r * audio_s}
            for i, s in enumerate(result.get("segments") or [])
        )
    files = FileStore(workdir / "replay")
    key = new_key()
    rewritten = listed = 0
    for n, segment in enumerate(every):
        files.append_partial(key, 1, [segment])
        listed += len(json.dumps(segment, ensure_ascii=False).encode())
        rewritten += 2 + listed + 2 * n  # "[" + items joined by ", " + "]"
    appended = sum(p.stat().st_size for p in files.partial_dir.iterdir())
    whole = {**result, "segments": every, "text": " ".join(str(s.get("text") or "").strip() for s in every)}
    return {
        "audio_s": repeats * audio_s,
        "segments": len(every),
        "appended_bytes": appended,
        "rewritten_bytes": rewritten,
        "result_bytes": len(json.dumps(whole, ensure_ascii=False).encode()),
    }


def run(ctx: Ctx, sec: Section) -> None:
    repeats = ctx.pick(12, 5)  # long.mp3 (62 s) this many times: about 12 and 5 minutes
    rounds = ctx.pick(3, 2)
    wav = ctx.workdir / f"long_x{repeats}.wav"
    audio_s = write_wav(wav, concatenated(decoded(FIXTURES / "long.mp3"), 62.0 * repeats, seed=7))
    timeout = 1800.0
    runs: dict[int, list[dict[str, Any]]] = {0: [], READERS: []}
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))
        for r in range(rounds):  # interleaved, the order rotated
            for readers in (0, READERS) if r % 2 == 0 else (READERS, 0):
                runs[readers].append(long_run(srv, client, wav, readers, timeout))
                print(f"   {readers} readers: job {runs[readers][-1]['job_s']:.1f} s", flush=True)
        result = json.loads(newest_result(srv.storage).read_bytes())

    base, loaded = runs[0], runs[READERS]

    def versus(name: str, key: str, unit: str = "s", target: float | None = None) -> None:
        """A figure with streams against without: the minimum of the rounds."""
        x, b = min(r[key] for r in loaded), min(r[key] for r in base)
        met = None if target is None else x / b <= target
        sec.add(name, x, unit, "no streams", b, x / b, "streams/none", f"<= {target:.2f}x" if target else "", met)

    def written(name: str, wrote: int, result: int, target: float | None = 2.0) -> None:
        """Bytes written for a partial transcript against the size of the job's result."""
        met = None if target is None else wrote <= target * result
        sec.add(name, wrote / 1024, "KiB", "result", result / 1024, wrote / result, "written/result",
                f"<= {target:g}x" if target else "", met)  # fmt: skip

    versus(f"long job ({audio_s / 60:.1f} min) with {READERS} event streams on it: run time", "job_s", target=1.10)
    # Less noisy than the times on a shared machine: the CPU the server spent, in all, and on its
    # event loop (main thread: HTTP, the streams; inference runs on other threads).
    versus(f"server CPU during the job, {READERS} streams on it", "server_cpu_s", target=1.10)
    versus(f"  event loop CPU during the job, {READERS} streams on it", "loop_cpu_s")
    h_base = [x for r in base for x in r["health"]]
    h_loaded = [x for r in loaded for x in r["health"]]
    for p in (50, 99):
        b, x = pct(h_base, p) * 1e3, pct(h_loaded, p) * 1e3
        target = "< 20 ms" if p == 99 else ""
        sec.add(
            f"/health p{p} during the job, {READERS} streams on it", x, "ms", "no streams", b, x / b, "streams/none",
            target, (x < 20) if p == 99 else None,
        )  # fmt: skip
    live = base[-1]
    written(
        f"partial transcript bytes written, {audio_s / 60:.1f}-min job", live["partial_bytes"], live["result_bytes"]
    )
    two_hours = replay(ctx.workdir, result, audio_s)
    hours = two_hours["audio_s"] / 3600
    written(f"partial transcript bytes written, {hours:.1f} h replayed", two_hours["appended_bytes"],
            two_hours["result_bytes"])  # fmt: skip
    written(f"  (baseline) whole list rewritten after each segment, {hours:.1f} h replayed",
            two_hours["rewritten_bytes"], two_hours["result_bytes"], None)  # fmt: skip
    sec.notes.append(
        "job times: no streams %s s, %d streams %s s (minimum kept; server CPU %s / %s s, the bench client's %s / %s s); "
        "streams that got the final status: %s of %d, segment events each: %s of %d; /health samples: %d / %d"
        % ("/".join(f"{r['job_s']:.1f}" for r in base), READERS, "/".join(f"{r['job_s']:.1f}" for r in loaded),
           "/".join(f"{r['server_cpu_s']:.1f}" for r in base), "/".join(f"{r['server_cpu_s']:.1f}" for r in loaded),
           "/".join(f"{r['client_cpu_s']:.1f}" for r in base), "/".join(f"{r['client_cpu_s']:.1f}" for r in loaded),
           "/".join(str(r["readers_complete"]) for r in loaded), READERS,
           "/".join("%d-%d" % tuple(r["segments_streamed"]) for r in loaded), loaded[-1]["segments"],
           len(h_base), len(h_loaded))
    )  # fmt: skip
    sec.notes.append(
        "the %.1f-min job: %d segments, result %.0f KiB, partial file %.0f KiB; the server process's wchar over the "
        "job (every write: partial, result, SQLite, log) %.0f KiB; replay: %d segments"
        % (audio_s / 60, live["segments"], live["result_bytes"] / 1024, live["partial_bytes"] / 1024,
           live["server_wchar"] / 1024, two_hours["segments"])
    )  # fmt: skip
    strip = lambda r: {k: v for k, v in r.items() if k != "health"}  # noqa: E731
    sec.details.update(
        audio_s=audio_s, readers=READERS, runs={"none": [strip(r) for r in base], "streams": [strip(r) for r in loaded]},
        replay=two_hours,
    )  # fmt: skip
