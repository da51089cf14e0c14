"""Section queue: clips of 5-10 s submitted all at once (batched) against one
by one, in clips per minute, on each engine; and on the default engine, the
same clips at once against faster-whisper one by one in its own process, at
the service's beam and greedy, interleaved with the service's rounds."""

from __future__ import annotations

import contextlib
import time
import wave
from pathlib import Path
from typing import Any

import httpx

from bench.clips import SAMPLE_RATE, make_clips
from bench.context import FIXTURES, Ctx
from bench.peers import Helper, faster_name
from bench.report import Section
from bench.service import POLL_S, completed, serving, submit, upload_all, wait_done


def run_one_by_one(client: httpx.Client, clips: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """Submit, wait (poll every POLL_S), next. Span: first submit -> last finished_at."""
    t0 = time.time()
    records = [completed(wait_done(client, submit(client, p)["job_id"])) for p in clips]
    return max(r["finished_at"] for r in records) - t0, records


def run_at_once(url: str, client: httpx.Client, clips: list[Path]) -> tuple[float, list[dict[str, Any]], float]:
    """All uploads concurrently, then wait on /health (one cheap request per 100 ms)
    until the queue is empty and nothing runs. Span: first submit -> last finished_at."""
    t0 = time.time()
    jobs = upload_all([url], clips)
    accepted = time.time() - t0
    deadline = time.monotonic() + 900
    while True:
        health = client.get("/health").json()
        if not health.get("queue_size") and not health.get("processing"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("batch did not finish")
        time.sleep(0.1)
    records = [completed(client.get(f"/status/{j['job_id']}").json()) for j in jobs]
    return max(r["finished_at"] for r in records) - t0, records, accepted


def run_faster(helper: Helper, clips: list[Path], beam: int) -> float:
    """faster-whisper in its own process, one clip after another (decode + transcribe): seconds."""
    return sum(helper.call(op="e2e", path=str(p), beam=beam)["seconds"] for p in clips)


# The queue section runs on each engine: the default (ctranslate2) and openai.
QUEUE_ENGINES: dict[str, tuple[str, ...]] = {"default (ctranslate2)": (), "--engine openai": ("--engine", "openai")}
# The beam of a default job on ctranslate2 (engines.ctranslate2: default_beam_size).
SERVICE_BEAM = 2
# faster-whisper's rows: mode -> beam.
PEER_BEAMS = {"fw beam": SERVICE_BEAM, "fw greedy": 1}


def run(ctx: Ctx, sec: Section) -> None:
    count = ctx.pick(20, 6)
    clips_dir = ctx.workdir / "clips"
    clips_dir.mkdir(exist_ok=True)
    clips = make_clips(clips_dir, count)
    audio_total = sum(wave.open(str(p)).getnframes() for p in clips) / SAMPLE_RATE
    sec.details.update(clips=count, audio_seconds=audio_total, poll_interval_s=POLL_S)
    for label, args in QUEUE_ENGINES.items():
        queue_on(ctx, sec, clips, audio_total, label, args)


def queue_on(ctx: Ctx, sec: Section, clips: list[Path], audio_total: float, label: str, args: tuple[str, ...]) -> None:
    count = len(clips)
    # seq, batch, batch, seq (ABBA), so drift in the machine's load hits both alike;
    # on the default engine faster-whisper's rounds go between, mirrored too.
    peer = not args and ctx.device == "cpu"
    order = ["seq", "batch", "batch", "seq"]
    if peer:
        order = ["seq", "batch", "fw beam", "fw greedy", "batch", "fw greedy", "fw beam", "seq"]
    spans: dict[str, list[float]] = {mode: [] for mode in order}
    inference: dict[str, list[float]] = {"seq": [], "batch": []}
    accepted: list[float] = []
    # Where an at-once round's time went, from its first upload (s): every upload
    # answered 202; the first job started (queued, probed, its batch claimed); the last finished.
    phases: list[tuple[float, float, float]] = []
    with contextlib.ExitStack() as stack:
        helper = stack.enter_context(Helper(ctx, "faster")) if peer else None
        if helper is not None:
            run_faster(helper, clips[:1], SERVICE_BEAM)  # warm-up
        srv = stack.enter_context(serving(ctx, *args))
        client = stack.enter_context(httpx.Client(base_url=srv.url, timeout=300))
        completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))  # warm-up
        for mode in order:
            time.sleep(0.5)
            if mode in PEER_BEAMS:
                assert helper is not None
                spans[mode].append(run_faster(helper, clips, PEER_BEAMS[mode]))
                continue
            if mode == "seq":
                span, records = run_one_by_one(client, clips)
            else:
                span, records, acc = run_at_once(srv.url, client, clips)
                accepted.append(acc)
                t0 = max(r["finished_at"] for r in records) - span
                phases.append((acc, min(r["started_at"] for r in records) - t0, span))
            spans[mode].append(span)
            inference[mode].append(sum(r["finished_at"] - r["started_at"] for r in records))
    # Extra, informational: all at once with batching off, so queueing alone is seen apart from batching.
    spans["unbatched"] = []
    with (
        serving(ctx, *args, "--batch-size", "1") as srv,
        httpx.Client(base_url=srv.url, timeout=300) as client,
    ):
        completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))  # warm-up
        for _ in range(ctx.pick(2, 1)):
            time.sleep(0.5)
            spans["unbatched"].append(run_at_once(srv.url, client, clips)[0])
    rounds = len(spans["seq"])
    seq_rate = count * rounds / (sum(spans["seq"]) / 60)
    batch_rate = count * rounds / (sum(spans["batch"]) / 60)
    unbatched_rate = count * len(spans["unbatched"]) / (sum(spans["unbatched"]) / 60)
    sec.add(
        f"{label}: {count} clips of 5-10 s submitted at once", batch_rate, "clips/min", "one by one", seq_rate,
        batch_rate / seq_rate, "batch/seq", ">= 1.5x", batch_rate / seq_rate >= 1.5,
    )  # fmt: skip
    sec.add(
        f"  (extra) {label}: at once, serve --batch-size 1", unbatched_rate, "clips/min", "one by one", seq_rate,
        unbatched_rate / seq_rate, "unbatched/seq", "", None,
    )  # fmt: skip
    sec.add(
        f"  (extra) {label}: batching alone, at once vs at once --batch-size 1", batch_rate, "clips/min",
        "--batch-size 1", unbatched_rate, batch_rate / unbatched_rate, "batch/unbatched", "", None,
    )  # fmt: skip
    if peer:
        # The minimum of each, as the figures the defaults are held to.
        at_once = min(spans["batch"])
        for mode, target in (("fw beam", 1.2), ("fw greedy", 1.0)):
            alone = min(spans[mode])
            sec.add(
                f"{label}: {count} clips at once vs {faster_name(ctx.device)} one by one, "
                + (f"beam {PEER_BEAMS[mode]}" if PEER_BEAMS[mode] > 1 else "greedy"),
                at_once, "s", f"{faster_name(ctx.device)}, in-process", alone, alone / at_once, "fw/service",
                f">= {target:.1f}x", alone / at_once >= target,
            )  # fmt: skip
    sec.details.setdefault("engines", {})[label] = dict(
        order=order, span_s=spans, inference_s=inference, batch_all_accepted_s=accepted
    )
    sec.notes.append(
        "%s: %.0f s of audio x %d round(s) (order %s); wall per round: one by one %s s (inference %s s), at once "
        "%s s (inference %s s), at once --batch-size 1 %s s; all %d uploads answered 202 within %s s"
        % (label, audio_total, rounds, ",".join(order), "/".join(f"{x:.1f}" for x in spans["seq"]),
           "/".join(f"{x:.1f}" for x in inference["seq"]), "/".join(f"{x:.1f}" for x in spans["batch"]),
           "/".join(f"{x:.1f}" for x in inference["batch"]), "/".join(f"{x:.1f}" for x in spans["unbatched"]),
           count, "/".join(f"{x:.2f}" for x in accepted))
    )  # fmt: skip
    best = min(phases, key=lambda p: p[2])
    sec.notes.append(
        "%s: where the fastest at-once round's %.2f s went: every upload answered 202 after %.2f s, the first "
        "job started at %.2f s (upload, probe, queue, batch claimed), the last finished at %.2f s (decoding, "
        "results written)" % (label, best[2], best[0], best[1], best[2])
    )
    sec.details["engines"][label]["at_once_phases_s"] = phases
    if peer:
        sec.notes.append(
            "%s: faster-whisper one by one in its own process (decode + transcribe, summed), per round: beam %d %s s, "
            "greedy %s s; at once: first upload to last finished_at"
            % (label, SERVICE_BEAM, "/".join(f"{x:.1f}" for x in spans["fw beam"]),
               "/".join(f"{x:.1f}" for x in spans["fw greedy"]))
        )  # fmt: skip
