"""Section responsive: /health and /status latency with 50 concurrent
pollers during a long transcription, against the idle server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench.clips import concatenated, decoded, write_wav
from bench.context import FIXTURES, Ctx
from bench.pollers import POLLER_INTERVAL_S, POLLERS, poll_storm
from bench.report import Section
from bench.service import completed, serving, submit, wait_done
from bench.stats import pct
from whisper_mcp.testing import ServerProcess


def busy_storm(
    srv: ServerProcess, client: httpx.Client, long_wav: Path, seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit ``long_wav``, wait until it runs, then poll for ``seconds`` (or until it ends)."""
    job = submit(client, long_wav)
    while client.get(f"/status/{job['job_id']}").json()["status"] == "queued":
        time.sleep(0.01)
    end = time.monotonic() + seconds
    busy = asyncio.run(poll_storm(srv.url, f"/status/{job['job_id']}", lambda: time.monotonic() > end, True))
    return busy, client.get(f"/status/{job['job_id']}").json()


def run(ctx: Ctx, sec: Section) -> None:
    repeats = ctx.pick(3, 2)
    idle_s = ctx.pick(8.0, 5.0)
    busy_s = ctx.pick(20.0, 10.0)  # pollers run this long into the transcription (or until it ends)
    long_wav = ctx.workdir / f"long_x{repeats}.wav"
    audio_s = write_wav(
        long_wav, concatenated(decoded(FIXTURES / "long.mp3"), 62.0 * repeats + 1.0 * (repeats - 1), seed=5)
    )
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        warm_id = completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))["job_id"]
        # Idle baseline: same pollers, same mix, nothing transcribing.
        end = time.monotonic() + idle_s
        idle = asyncio.run(poll_storm(srv.url, f"/status/{warm_id}", lambda: time.monotonic() > end, False))
        busy, record = busy_storm(srv, client, long_wav, busy_s)
    # Extra, informational: the same busy phase with one inference thread, and
    # with the inference threads at a lower CPU priority (the default until
    # issue 14: it made inference 10x slower beside other busy processes).
    extras: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for flags in (("--threads", "1"), ("--inference-nice", "10")):
        with serving(ctx, *flags) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
            completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))
            extras[" ".join(flags)] = busy_storm(srv, client, long_wav, busy_s)
    busy1, record1 = extras["--threads 1"]
    p99: dict[str, float] = {}
    for kind, label in (("health", "/health"), ("status", "/status")):
        b, i = busy["lat"][kind], idle["lat"][kind]
        if not b or not i:
            raise RuntimeError(f"no {label} samples (busy {len(b)}, idle {len(i)})")
        b50, b99 = pct(b, 50) * 1e3, pct(b, 99) * 1e3
        i50, i99 = pct(i, 50) * 1e3, pct(i, 99) * 1e3
        p99[kind] = b99
        sec.add(
            f"{label} p50, {POLLERS} pollers, during transcription",
            b50,
            "ms",
            "idle",
            i50,
            b50 / i50,
            "busy/idle",
            "",
            None,
        )
        sec.add(
            f"{label} p99, {POLLERS} pollers, during transcription",
            b99,
            "ms",
            "idle",
            i99,
            b99 / i99,
            "busy/idle",
            "< 20 ms",
            b99 < 20,
        )
    for flags, (extra, _) in extras.items():
        for kind, label in (("health", "/health"), ("status", "/status")):
            x = pct(extra["lat"][kind], 99) * 1e3
            sec.add(
                f"  (extra) {label} p99 during transcription, serve {flags}", x, "ms", "default settings", p99[kind],
                x / p99[kind], "extra/default", "< 20 ms", x < 20,
            )  # fmt: skip

    def summary(d: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k != "lat"}
        out["max_ms"] = {k: max(v) * 1e3 for k, v in d["lat"].items() if v}
        out["p50_ms"] = {k: pct(v, 50) * 1e3 for k, v in d["lat"].items() if v}
        out["p99_ms"] = {k: pct(v, 99) * 1e3 for k, v in d["lat"].items() if v}
        return out

    sec.details.update(
        pollers=POLLERS, poller_interval_s=POLLER_INTERVAL_S, audio_s=audio_s,
        idle=summary(idle), busy=summary(busy), long_job=record,
        extras={flags: {"busy": summary(b), "long_job": r} for flags, (b, r) in extras.items()},
    )  # fmt: skip
    sec.notes.append(
        "busy phase: %d requests in %.1f s (%.0f req/s), %d errors; max /health %.0f ms, /status %.0f ms; "
        "progress of the %.0f s file when the pollers stopped: %.2f (default threads), %.2f (--threads 1)"
        % (busy["requests"], busy["elapsed_s"], busy["requests"] / busy["elapsed_s"], busy["errors"],
           sec.details["busy"]["max_ms"]["health"], sec.details["busy"]["max_ms"]["status"], audio_s,
           1.0 if record["status"] == "completed" else record.get("progress") or 0.0,
           1.0 if record1["status"] == "completed" else record1.get("progress") or 0.0)
    )  # fmt: skip
    sec.notes.append(
        "client event-loop lag (inside every latency above, not the server's): idle p50 %.1f / p99 %.1f ms, "
        "busy p50 %.1f / p99 %.1f ms, busy --threads 1 p50 %.1f / p99 %.1f ms"
        % (idle["client_lag_p50_ms"], idle["client_lag_p99_ms"], busy["client_lag_p50_ms"], busy["client_lag_p99_ms"],
           busy1["client_lag_p50_ms"], busy1["client_lag_p99_ms"])
    )  # fmt: skip
