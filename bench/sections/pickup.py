"""Section pickup: created_at -> started_at with an idle worker (median, p95)."""

from __future__ import annotations

import httpx

from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.service import completed, pickups, serving, submit, wait_done
from bench.stats import median, pct


def run(ctx: Ctx, sec: Section) -> None:
    n = ctx.pick(20, 10)
    clip = FIXTURES / "short.wav"
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        completed(wait_done(client, submit(client, clip)["job_id"]))  # warm-up
        times = pickups(client, clip, n)
    pickup, client_pickup, processing, upload = (times[k] for k in ("pickup", "after_202", "run", "upload"))
    ms = [x * 1000 for x in pickup]
    proc_ms = median(processing) * 1000
    sec.add(
        "pick-up created_at->started_at, median", median(ms), "ms", "job run time (short.wav)", proc_ms,
        median(ms) / proc_ms, "pickup/run", "< 5 ms", median(ms) < 5,
    )  # fmt: skip
    sec.add(
        "pick-up created_at->started_at, p95", pct(ms, 95), "ms", "job run time (short.wav)", proc_ms,
        pct(ms, 95) / proc_ms, "pickup/run", "<= 50 ms *", pct(ms, 95) <= 50,
    )  # fmt: skip
    sec.details.update(
        jobs=n, pickup_ms=ms, started_minus_client_202_ms=[x * 1000 for x in client_pickup],
        run_ms=[x * 1000 for x in processing], upload_to_202_ms=[x * 1000 for x in upload],
    )  # fmt: skip
    sec.notes.append(
        f"started_at - (client receives 202): median {median(client_pickup) * 1000:.1f} ms (negative: the job started "
        f"before the 202 arrived); upload->202 median {median(upload) * 1000:.1f} ms"
    )
