"""Section warm: speech.wav end to end through the service, against
in-process warm transcription and against a fresh process per clip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from bench.context import FIXTURES, Ctx
from bench.peers import Helper, cold_process
from bench.report import Section
from bench.service import service_e2e, serving
from bench.stats import median


def run(ctx: Ctx, sec: Section) -> None:
    clip = FIXTURES / "speech.wav"
    n = ctx.pick(7, 3)
    n_cold = ctx.pick(5, 2)
    with (
        serving(ctx) as srv,
        Helper(ctx, "openai") as helper,
        httpx.Client(base_url=srv.url, timeout=300) as client,
    ):
        sec.details["server_ready_s"] = srv.ready_s
        sec.details["helper_ready"] = helper.ready
        service_e2e(client, clip)  # warm-up: first job pays one-off costs
        helper.call(op="e2e", path=str(clip))
        svc: list[dict[str, Any]] = []
        warm: list[dict[str, Any]] = []
        cold: list[dict[str, Any]] = []
        for i in range(n):
            runs: list[Callable[[], None]] = [
                lambda: svc.append(service_e2e(client, clip)),
                lambda: warm.append(helper.call(op="e2e", path=str(clip))),
            ]
            if i < n_cold:
                runs.append(lambda: cold.append(cold_process(ctx, clip)))
            for k in range(len(runs)):  # rotate the order so no one always runs first
                runs[(i + k) % len(runs)]()
    svc_t = [r["total_s"] for r in svc]
    warm_t = [r["seconds"] for r in warm]
    cold_t = [r["wall_s"] for r in cold]
    s, w, c = median(svc_t), median(warm_t), median(cold_t)
    overhead = s - w
    sec.add(
        "service e2e speech.wav (upload+transcribe+download), median",
        s,
        "s",
        "in-process warm decode+transcribe",
        w,
        s / w,
        "svc/warm",
        "<= +10% or <= +100 ms",
        overhead <= max(0.10 * w, 0.100),
    )
    sec.add(
        "  service overhead over in-process warm",
        overhead * 1000,
        "ms",
        "",
        None,
        None,
        "",
        f"<= max(10%, 100 ms) = {max(0.10 * w, 0.100) * 1000:.0f} ms",
        overhead <= max(0.10 * w, 0.100),
    )
    sec.add(
        "fresh process per clip (import+load+transcribe), median",
        c,
        "s",
        "service e2e",
        s,
        c / s,
        "cold/svc",
        ">= 2.5x",
        c / s >= 2.5,
    )

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return round(median([r[key] for r in rows]), 4)

    sec.details.update(
        runs=n, cold_runs=n_cold, wait="GET /status?wait=50",
        service_total_s=svc_t, warm_s=warm_t, cold_wall_s=cold_t,
        service_breakdown_median_s={k: med(svc, k) for k in ("upload_to_202_s", "created_to_started_s", "started_to_finished_s", "download_s")},
        warm_decode_median_s=med(warm, "decode_s"),
        cold_breakdown_median_s={k: med(cold, k) for k in ("import_s", "load_s", "transcribe_s")},
        texts={"service": svc[0]["text"], "warm": warm[0]["text"], "cold": cold[0]["text"]},
    )  # fmt: skip
    b = sec.details["service_breakdown_median_s"]
    cb = sec.details["cold_breakdown_median_s"]
    sec.notes.append(
        "service median breakdown: upload->202 %.0f ms, created->started %.1f ms, started->finished %.0f ms, download %.1f ms "
        "(the client waits with GET /status?wait=50); in-process: decode %.1f ms"
        % (b["upload_to_202_s"] * 1e3, b["created_to_started_s"] * 1e3, b["started_to_finished_s"] * 1e3, b["download_s"] * 1e3,
           sec.details["warm_decode_median_s"] * 1e3)
    )  # fmt: skip
    sec.notes.append(
        "fresh process median: imports %.2f s, model load %.2f s, transcribe %.2f s, wall %.2f s"
        % (cb["import_s"], cb["load_s"], cb["transcribe_s"], c)
    )
    if len({sec.details["texts"][k].strip() for k in ("service", "warm", "cold")}) != 1:
        sec.notes.append("WARNING: the three transcripts differ (see JSON details.texts)")
