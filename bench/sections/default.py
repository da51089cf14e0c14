"""Section default: the service with no flags (and --engine openai) against
faster-whisper int8, whisper.cpp and openai-whisper in their own processes:
time, WER and peak RSS on the long recordings."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx

from bench.clips import long_clips
from bench.context import FIXTURES, Ctx
from bench.peers import faster_name, start_helpers
from bench.report import Section
from bench.rss import mib, vm_kb
from bench.service import service_e2e, serving
from bench.stats import median
from bench.wer import WER_CLIPS, wer


def run(ctx: Ctx, sec: Section) -> None:
    # 5 rounds: one peer's lucky quiet minute once moved its minimum by 25%.
    rounds = ctx.pick(5, 1)
    timed = long_clips(ctx)
    accuracy = [(FIXTURES / c, (FIXTURES / r).read_text()) for c, r in WER_CLIPS[1:]]
    fw = faster_name(ctx.device)
    labels = {
        "service": "whisper-mcp, default settings (end to end)",
        "service-openai": "whisper-mcp --engine openai (end to end)",
        "faster": f"{fw}, in-process",
        "whispercpp": "whisper.cpp f16 (pywhispercpp), in-process",
        "openai": "openai-whisper, in-process",
    }
    with contextlib.ExitStack() as stack:
        helpers = start_helpers(ctx, ["faster", "whispercpp", "openai"], sec, stack)
        servers = {
            "service": stack.enter_context(serving(ctx)),
            "service-openai": stack.enter_context(serving(ctx, "--engine", "openai")),
        }
        clients = {k: stack.enter_context(httpx.Client(base_url=s.url, timeout=900)) for k, s in servers.items()}

        def run(name: str, path: Path) -> tuple[float, str]:
            if name in clients:
                out = service_e2e(clients[name], path)
                return out["total_s"], out["text"]
            out = helpers[name].call(op="e2e", path=str(path))  # decode + transcribe, as the service does
            if "error" in out:
                raise RuntimeError(f"{name}: {out['error']}")
            return out["seconds"], out["text"]

        names = [n for n in labels if n in clients or n in helpers]
        for name in names:  # warm-up
            run(name, FIXTURES / "short.wav")
        times: dict[str, dict[str, list[float]]] = {n: {p.name: [] for p, _ in timed} for n in names}
        texts: dict[str, dict[str, str]] = {n: {} for n in names}
        for i in range(rounds):
            for k in range(len(names)):  # interleaved, the order rotated each round
                name = names[(i + k) % len(names)]
                for path, _ in timed:
                    seconds, texts[name][path.name] = run(name, path)
                    times[name][path.name].append(seconds)
        for name in names:
            for path, _ in accuracy:
                texts[name][path.name] = run(name, path)[1]
        peak = {n: mib(vm_kb(s.pid, "VmHWM") or 0) for n, s in servers.items()}
        peak.update({n: mib(h.call(op="rss")["hwm_kb"]) for n, h in helpers.items()})
    refs = {p.name: ref for p, ref in timed + accuracy}
    # WER over distinct recordings: long_x4 repeats long.mp3 (it is there to
    # be timed) and would count that one synthetic passage five times over.
    scored = [c for c in refs if c != "long_x4.wav"]
    wers = {n: wer([(refs[c], texts[n][c]) for c in scored]) * 100 for n in names}
    best = {n: sum(min(t) for t in times[n].values()) for n in names}
    clip_names = " + ".join(p.name for p, _ in timed)
    base = best.get("faster")
    for name in names:
        ratio = best[name] / base if base else None
        target, met = "", None
        if name == "service" and base:
            target, met = "<= 1.0x", best[name] <= base
        sec.add(
            f"{labels[name]}: time on {clip_names}", best[name], "s", fw, base, ratio, "value/fw", target, met
        )  # fmt: skip
    if "whispercpp" in best:
        sec.add(
            "whisper-mcp default vs whisper.cpp: time", best["service"], "s", "whisper.cpp", best["whispercpp"],
            best["service"] / best["whispercpp"], "value/w.cpp", "<= 1.0x", best["service"] <= best["whispercpp"],
        )  # fmt: skip
    for name in names:
        target, met = "", None
        if name == "service" and "faster" in wers:
            peers = [p for p in ("faster", "whispercpp") if p in wers]
            target, met = "<= " + ", ".join(peers), all(wers["service"] <= wers[p] + 1e-9 for p in peers)
        sec.add(
            f"{labels[name]}: WER, {', '.join(scored)}", wers[name], "%", fw, wers.get("faster"),
            wers[name] / wers["faster"] if wers.get("faster") else None, "value/fw", target, met,
        )  # fmt: skip
    for name in names:
        target, met = "", None
        if name == "service" and "faster" in peak:
            target, met = "<= 1.5x", peak["service"] <= 1.5 * peak["faster"]
        sec.add(
            f"{labels[name]}: peak RSS", peak[name], "MiB", fw, peak.get("faster"),
            peak[name] / peak["faster"] if peak.get("faster") else None, "value/fw", target, met,
        )  # fmt: skip
    per_clip = {n: {c: wer([(refs[c], texts[n][c])]) * 100 for c in refs} for n in names}
    medians = {n: sum(median(t) for t in times[n].values()) for n in names}
    sec.notes.append(
        "the same times as medians of the rounds (summed over clips): "
        + ", ".join(
            f"{n} {medians[n]:.2f} s ({medians[n] / medians['faster']:.2f}x fw)" for n in names if "faster" in medians
        )
    )
    sec.notes.append(
        f"minimum of {rounds} interleaved round(s); end to end = upload, GET /status?wait=50, download; "
        "in-process = decode + transcribe. WER per clip: "
        + "; ".join(f"{n} " + ", ".join(f"{c} {w:.1f}%" for c, w in per_clip[n].items()) for n in names)
    )
    sec.details.update(rounds=rounds, seconds=times, wer_percent=wers, wer_per_clip=per_clip, peak_rss_mib=peak,
                       texts=texts, labels=labels)  # fmt: skip
