#!/usr/bin/env python
"""whisper-mcp benchmarks: start the service as a user would and measure it.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--model tiny.en] [--device cpu|cuda]
                                  [--out bench/results/latest.json]

Sections (each starts its own server on a free loopback port with fresh
temporary storage, so any one runs alone with --only):

  warm        end-to-end speech.wav through the service vs in-process warm
              transcription vs a fresh process per clip
  engine      real-time factor on long.mp3 and word error rate on the committed
              clips: openai-whisper, faster-whisper int8, and whisper-mcp's engine
              (ctranslate2, ctranslate2 with VAD batching)
  queue       20 clips of 5-10 s submitted at once (batched) vs one by one (clips/minute),
              and vs faster-whisper one by one in its own process (beam 2, greedy)
  pickup      202 -> started_at with an idle worker (median, p95)
  responsive  /health and /status latency with 50 concurrent pollers during a
              long transcription vs idle
  memory      server RSS: idle, peak on a 1-min file (against faster-whisper's)
              and a 30-min file, growth during a 1 GiB upload, and by part
  replicas    three replicas on one PostgreSQL database (a throwaway cluster) vs
              one server on SQLite: pick-up latency (NOTIFY across replicas),
              throughput of 3 replicas vs 1, /status p99 with all transcribing
  default     the service with no flags vs faster-whisper int8, whisper.cpp and
              openai-whisper in their own processes: time, WER, peak RSS on
              long.mp3, a 4-minute recording and 200 s of real speech
              (bench/audio, see its SOURCES.md)
  contention  the same clip with one CPU-bound competitor per core, against quiet
  silence     silence and noise: how many words come back
  vad         vad_filter on and off: speech time and WER, silence and noise
  diarize     speaker diarization beside transcription: time and peak memory
  languages   language routing: its cost on English, languages identified
  streams     a long job with and without 200 event streams on it (time, server
              CPU, /health p50/p99); partial transcript bytes written against
              the result's size, for that job and a 2-hour replay
  settings    the ctranslate2 CPU defaults (decoder threads, encoder precision,
              beam) against each changed alone, in one process, interleaved
  chaos       1,000 short jobs (some with callbacks) over three replicas on
              PostgreSQL (and an S3 bucket where the service has
              --storage-url) while one replica is SIGKILLed every 10 s and
              started again, PostgreSQL and the bucket restarted once: jobs
              completed exactly once, lost, delivery ids per callback,
              503s, /status p50/p99/max
  realtime    live transcription through the openai SDK at real-time pace:
              speech_stopped -> completed, speech_started -> first delta,
              with 2 and 4 sessions and beside a batch job; lag over a long
              stream; live WER against batch
  heap        the server's glibc heap settings (one arena, 32 MiB mmap
              threshold) against those before: server CPU, wall, peak RSS
              and RSS once idle on long.mp3 and eight clips at once

Every figure is printed next to a baseline measured in the same run, as a ratio.
The machine may be shared and noisy: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: bench's modules import as bench.*, from this checkout
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.context import BENCH, ROOT, Ctx  # noqa: E402
from bench.machine import cpu_model, git_state, loadavg  # noqa: E402
from bench.report import Section, table  # noqa: E402
from bench.sections import GROUPS, SECTIONS  # noqa: E402


def parse(argv: list[str] | None) -> tuple[Ctx, list[str]]:
    """The flags as the run's context (its ``workdir`` the folder each section's
    own temporary folder goes in), and the sections to run, in order."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 5-min file, 256 MiB upload (about 4 min)")
    ap.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}; or a group: {', '.join(GROUPS)}")
    ap.add_argument(
        "--recording",
        help="a long recording of real speech, timed and scored beside long.mp3 (default, contention); "
        "its reference text in a .txt file of the same name",
    )
    ap.add_argument("--out", default=str(BENCH / "results" / "latest.json"), help="JSON results file")
    ap.add_argument(
        "--model", default="tiny.en", help="model of every server and helper, default tiny.en (e.g. base on a GPU)"
    )
    ap.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device of every server and helper, default cpu"
    )
    ap.add_argument(
        "--tree",
        help="benchmark the whisper_mcp of another checkout (e.g. a `git archive` snapshot); default: this one",
    )
    args = ap.parse_args(argv)
    tree = ROOT
    if args.tree:
        tree = Path(args.tree).resolve()
        if not (tree / "whisper_mcp" / "__init__.py").is_file():
            ap.error(f"{tree} has no whisper_mcp package")
    recording = None
    if args.recording:
        path = Path(args.recording).resolve()
        if not path.is_file() or not path.with_suffix(".txt").is_file():
            ap.error(f"--recording needs {path} and its reference text {path.with_suffix('.txt')}")
        recording = (path, path.with_suffix(".txt").read_text())
    names = list(SECTIONS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    names = [section for n in names for section in GROUPS.get(n, [n])]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    ctx = Ctx(Path(tempfile.gettempdir()), args.quick, args.model, args.device, tree, recording, Path(args.out))
    return ctx, names


def run_section(ctx: Ctx, name: str) -> Section:
    """One section in a fresh temporary folder; an exception is its error, not the run's."""
    sec = Section(name, load_at_start=loadavg())
    print(f"-- {SECTIONS[name][0]} ...", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"whisper-bench-{name}-", dir=ctx.workdir) as tmp:
        try:
            SECTIONS[name][1](replace(ctx, workdir=Path(tmp)), sec)
        except Exception:
            sec.error = traceback.format_exc()
            print(sec.error, file=sys.stderr, flush=True)
    sec.seconds = time.perf_counter() - t0
    for fig in sec.figures:
        print("   " + " | ".join(fig.cells()), flush=True)
    return sec


def main(argv: list[str] | None = None) -> int:
    ctx, names = parse(argv)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": ctx.quick,
        "sections": names,
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_before": loadavg(),
        "python": platform.python_version(),
        "model": ctx.model,
        "device": ctx.device,
        "threads": "service default (torch default)",
        "tree": str(ctx.tree),
        "git": git_state(ctx.tree),
    }
    print(f"whisper-mcp bench {meta['date']}  nproc={meta['nproc']}  cpu={meta['cpu']}  load={meta['load_before']}"
          f"  model={ctx.model}  device={ctx.device}  mode={'quick' if ctx.quick else 'full'}  tree={ctx.tree} ({meta['git']})", flush=True)  # fmt: skip
    if meta["load_before"][0] > 1.5:
        print(f"NOTE: machine busy (1-min load {meta['load_before'][0]} > 1.5): figures will be noisy", flush=True)
    t_all = time.perf_counter()
    results = [run_section(ctx, name) for name in names]
    meta["load_after"] = loadavg()
    meta["seconds"] = round(time.perf_counter() - t_all, 1)
    meta["busy"] = max(meta["load_before"][0], *(s.load_at_start[0] for s in results)) > 1.5
    print()
    print(table(results, {name: title for name, (title, _) in SECTIONS.items()}))
    print("\n* target implied by the design (see bench/README.md), not set by the issue.")
    print(f"total {meta['seconds']:.0f} s; load average before {meta['load_before']}, after {meta['load_after']}"
          + ("  (machine busy: noisy)" if meta["busy"] else ""))  # fmt: skip
    ctx.out.parent.mkdir(parents=True, exist_ok=True)
    ctx.out.write_text(json.dumps({"meta": meta, "sections": [asdict(s) for s in results]}, indent=2, default=str))
    print(f"wrote {ctx.out}")
    return 1 if any(s.error for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
