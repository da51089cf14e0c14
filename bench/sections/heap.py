"""Section heap: the server's glibc heap settings (whisper_mcp.heap: one
arena, a 32 MiB mmap threshold, free pages handed back when the queue is
idle) against the settings it had before (a fixed 128 KiB threshold, glibc's
arenas per thread), set through the environment on the same code. Each
round starts one server of each, alternated: server CPU (user and system),
wall time, peak RSS and RSS once idle, on long.mp3 alone and on eight short
clips submitted at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.rss import cpu_times, mib, vm_kb
from bench.service import completed, serving, submit, wait_done
from bench.stats import median

CLIPS = (
    "speech.wav",
    "short.wav",
    "speech.flac",
    "speech.mp3",
    "speech.opus",
    "speech.m4a",
    "dialogue.wav",
    "spanish.wav",
)
# The settings before: what glibc does unless told, with the threshold fixed at its starting value.
BEFORE = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))}


def _jobs(client: httpx.Client, paths: list[Path]) -> None:
    ids = [submit(client, path)["job_id"] for path in paths]
    for job_id in ids:
        completed(wait_done(client, job_id))


def _round(ctx: Ctx, env: dict[str, str]) -> dict[str, float]:
    with serving(ctx, env=env) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        _jobs(client, [FIXTURES / "short.wav"])  # warm-up: the models loaded
        figures: dict[str, float] = {}
        for name, paths in (("long", [FIXTURES / "long.mp3"]), ("clips", [FIXTURES / n for n in CLIPS])):
            user, system = cpu_times(srv.pid)
            t = time.monotonic()
            _jobs(client, paths)
            figures[f"{name}_wall"] = time.monotonic() - t
            user2, system2 = cpu_times(srv.pid)
            figures[f"{name}_cpu"] = user2 - user + system2 - system
            figures[f"{name}_sys"] = system2 - system
            figures[f"{name}_peak_mib"] = mib(vm_kb(srv.pid, "VmHWM") or 0)
            time.sleep(1.0)  # the worker sees the queue empty
            figures[f"{name}_idle_mib"] = mib(vm_kb(srv.pid) or 0)
    return figures


def run(ctx: Ctx, sec: Section) -> None:
    rounds = ctx.pick(3, 2)
    now: list[dict[str, float]] = []
    before: list[dict[str, float]] = []
    for _ in range(rounds):
        now.append(_round(ctx, {}))
        before.append(_round(ctx, BEFORE))

    def med(runs: list[dict[str, float]], key: str) -> float:
        return median([r[key] for r in runs])

    for name, label in (("long", "long.mp3"), ("clips", "8 clips at once")):
        cpu, cpu0 = med(now, f"{name}_cpu"), med(before, f"{name}_cpu")
        sec.add(f"server CPU, {label}", cpu, "s", "before", cpu0, cpu / cpu0, "now/before", "< 1", cpu < cpu0)
        sys_, sys0 = med(now, f"{name}_sys"), med(before, f"{name}_sys")
        sec.add(f"  of it system CPU, {label}", sys_, "s", "before", sys0, sys_ / sys0, "now/before", "", None)
        wall, wall0 = med(now, f"{name}_wall"), med(before, f"{name}_wall")
        sec.add(f"wall time, {label}", wall, "s", "before", wall0, wall / wall0, "now/before", "", None)
        peak, peak0 = med(now, f"{name}_peak_mib"), med(before, f"{name}_peak_mib")
        sec.add(f"peak RSS since start, {label}", peak, "MiB", "before", peak0, peak / peak0, "now/before", "", None)
        idle, idle0 = med(now, f"{name}_idle_mib"), med(before, f"{name}_idle_mib")
        sec.add(f"RSS once idle, after {label}", idle, "MiB", "before", idle0, idle / idle0, "now/before", "", None)
    sec.details.update(rounds=rounds, now=now, before=before, before_env=BEFORE)
    sec.notes.append(f"medians of {rounds} rounds, servers alternated; before = the environment {BEFORE}")
