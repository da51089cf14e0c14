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
  queue       20 clips of 5-10 s submitted at once (batched) vs one by one (clips/minute)
  pickup      202 -> started_at with an idle worker (median, p95)
  responsive  /health and /status latency with 50 concurrent pollers during a
              long transcription vs idle
  memory      server RSS: idle, peak on a 1-min and a 30-min file, growth during
              a 1 GiB upload
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

Every figure is printed next to a baseline measured in the same run, as a ratio.
The machine may be shared and noisy: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import wave
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from whisper_mcp.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FIXTURES = ROOT / "tests" / "fixtures"
HELPER = BENCH / "_helper.py"
PY = sys.executable
# The tree whose whisper_mcp is benchmarked (--tree): the server and helper
# processes run from it; bench code and fixtures come from this checkout.
TREE = ROOT
# Model and device of every server and helper process (--model, --device).
MODEL = "tiny.en"
DEVICE = "cpu"
# A long recording of real speech and its reference text (--recording), used
# beside long.mp3 by the sections default and contention.
RECORDING: tuple[Path, str] | None = None
# 200 s of real read speech with its reference text (public domain and
# permissive sources: bench/audio/SOURCES.md), timed and scored in section
# default; stored in two parts, joined into the run's folder (real_speech()).
REAL_SPEECH_TEXT = BENCH / "audio" / "real_speech.txt"


def sub_env() -> dict[str, str]:
    env = dict(os.environ)
    if TREE != ROOT:
        env["PYTHONPATH"] = str(TREE) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


SAMPLE_RATE = 16000
FINISHED = ("completed", "failed", "cancelled")

# Client-side poll interval while waiting for one job (sections warm, queue, pickup).
POLL_S = 0.02


# --------------------------------------------------------------------------
# small utilities


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), p))


def vm_kb(pid: int, field_name: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def mib(kb: float) -> float:
    return kb / 1024.0


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=TREE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=TREE, capture_output=True, text=True
        ).stdout.strip()
        return (head or "not a git checkout") + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def normalise_words(text: str) -> list[str]:
    """openai-whisper's English normaliser (the one its papers score with:
    "fifteenth" and "15th", "one two three" and "1 2 3" compare equal), as words."""
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()(text).split()


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word-level Levenshtein distance, and the reference's length in words."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over (reference, hypothesis) pairs: all edits over all reference words."""
    counts = [edits(r, h) for r, h in pairs]
    words = sum(n for _, n in counts)
    return sum(e for e, _ in counts) / words if words else 0.0


def decoded(path: Path) -> np.ndarray:
    from whisper_mcp.engines.audio import decode_audio  # PyAV + numpy only, no torch

    return decode_audio(path)


def write_wav(path: Path, chunks: Iterator[np.ndarray] | list[np.ndarray]) -> float:
    """Write float32 chunks as 16 kHz mono 16-bit PCM; returns seconds written."""
    n = 0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for chunk in chunks:
            w.writeframes((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
            n += len(chunk)
    return n / SAMPLE_RATE


def concatenated(
    source: np.ndarray, seconds: float, seed: int, gap: tuple[float, float] = (0.2, 1.5)
) -> Iterator[np.ndarray]:
    """``source`` repeated with small random gaps of faint noise, up to ``seconds``."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    written = 0
    while written < total:
        piece = source[: total - written]
        yield piece
        written += len(piece)
        if written >= total:
            break
        g = min(int(rng.uniform(*gap) * SAMPLE_RATE), total - written)
        yield (rng.standard_normal(g) * 1e-3).astype(np.float32)
        written += g


# --------------------------------------------------------------------------
# the service under test


class RssSampler(threading.Thread):
    """VmRSS of a process every ``interval`` seconds, with timestamps."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kb = vm_kb(self.pid)
            if kb is None:
                break
            self.samples.append((time.monotonic(), kb))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def window(self, t0: float, t1: float | None = None) -> list[int]:
        t1 = time.monotonic() if t1 is None else t1
        return [kb for t, kb in list(self.samples) if t0 <= t <= t1]

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else (vm_kb(self.pid) or 0)


@contextlib.contextmanager
def serving(
    workdir: Path, *extra: str, timeout: float = 300.0, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """``python -m whisper_mcp serve`` of the benchmarked tree (cwd and
    PYTHONPATH), on a free loopback port with fresh storage under ``workdir``,
    with the run's model and device (and ``env`` added to the environment);
    SIGTERM when the block ends."""
    port = free_port()
    srv = ServerProcess(
        workdir / f"storage-{port}", workdir / f"server-{port}.log", "--model", MODEL, "--device", DEVICE, *extra,
        port=port, env={**sub_env(), **(env or {})}, cwd=TREE,
    )  # fmt: skip
    srv.start(timeout)
    try:
        yield srv
    finally:
        srv.stop()


class Helper:
    """A persistent bench/_helper.py process holding one engine (see its docstring)."""

    def __init__(self, engine: str, workdir: Path, threads: int = 0, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / f"helper-{engine}-{threads}-{len(env or {})}.log"
        self.stderr = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PY, str(HELPER), "serve", engine, str(threads), MODEL, DEVICE],
            cwd=TREE, env={**sub_env(), **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )  # fmt: skip
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.flush()
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"helper exited ({self.proc.poll()}):\n{tail}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"helper: {out['error']}")
        return out

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd, default=str) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(client: httpx.Client, path: Path, **fields: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        r = client.post(
            "/transcribe", files={"file": (path.name, f, "application/octet-stream")}, data={"cache": "false", **fields}
        )
    if r.status_code != 202:
        raise RuntimeError(f"POST /transcribe {path.name}: {r.status_code} {r.text[:300]}")
    return r.json()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 900.0, poll: float | None = POLL_S) -> dict[str, Any]:
    """The job's record once it has ended: polled every ``poll`` seconds, or
    with ``poll=None`` by long polls (GET /status?wait=50: no polling load on the server)."""
    deadline = time.monotonic() + timeout
    params = {"wait": "50"} if poll is None else None
    while True:
        record = client.get(f"/status/{job_id}", params=params, timeout=80).json()
        if record.get("status") in FINISHED:
            return record
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not finished after {timeout}s: {record}")
        if poll is not None:
            time.sleep(poll)


def completed(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("status") != "completed":
        raise RuntimeError(f"job {record.get('job_id')} ended {record.get('status')}: {record.get('error')}")
    return record


# --------------------------------------------------------------------------
# results


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float | None
    ratio: float | None
    ratio_note: str  # what the ratio is, e.g. "value/baseline"
    target: str  # "" for information only
    met: bool | None  # None: no target

    def cells(self) -> list[str]:
        def fmt(x: float | None) -> str:
            if x is None:
                return "-"
            if self.unit in ("s",):
                return f"{x:.3f} s"
            if self.unit == "ms":
                return f"{x:.1f} ms"
            if self.unit == "MiB":
                return f"{x:.0f} MiB"
            if self.unit == "%":
                return f"{x:.1f} %"
            if self.unit == "x RT":
                return f"{x:.3f}"
            return f"{x:.2f} {self.unit}".strip()

        ratio = "-" if self.ratio is None else (f"{self.ratio:.2f}x" if self.ratio >= 0.1 else f"{self.ratio:.4f}x")
        result = "info" if self.met is None else ("met" if self.met else "NOT met")
        base = fmt(self.baseline) + (f" {self.baseline_name}" if self.baseline_name else "")
        return [self.name, fmt(self.value), base, f"{ratio} {self.ratio_note}".strip(), self.target or "-", result]


@dataclass
class Section:
    name: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    load_at_start: list[float] = field(default_factory=list)

    def add(self, *args: Any, **kw: Any) -> Figure:
        fig = Figure(*args, **kw)
        self.figures.append(fig)
        return fig


@dataclass
class Ctx:
    quick: bool
    workdir: Path

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


# --------------------------------------------------------------------------
# 1. warm vs cold


def service_e2e(client: httpx.Client, path: Path, **fields: str) -> dict[str, Any]:
    """Upload, wait (GET /status?wait=50, a long poll), download: what one caller sees."""
    t0 = time.perf_counter()
    job = submit(client, path, **fields)
    t202 = time.perf_counter()
    record = completed(wait_done(client, job["job_id"], poll=None))
    t_seen = time.perf_counter()
    text = client.get(f"/download/{job['job_id']}").text
    t1 = time.perf_counter()
    return {
        "total_s": t1 - t0,
        "upload_to_202_s": t202 - t0,
        "created_to_started_s": record["started_at"] - record["created_at"],
        "started_to_finished_s": record["finished_at"] - record["started_at"],
        "download_s": t1 - t_seen,
        "text": text,
    }


def cold_process(path: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [PY, str(HELPER), "cold", str(path), MODEL, DEVICE],
        cwd=TREE,
        env=sub_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"cold process failed ({p.returncode}):\n{p.stderr[-2000:]}")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    info["wall_s"] = wall
    return info


def bench_warm(ctx: Ctx, sec: Section) -> None:
    clip = FIXTURES / "speech.wav"
    n = ctx.pick(7, 3)
    n_cold = ctx.pick(5, 2)
    with (
        serving(ctx.workdir) as srv,
        Helper("openai", ctx.workdir) as helper,
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
                runs.append(lambda: cold.append(cold_process(clip)))
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


# --------------------------------------------------------------------------
# 2. engine speed and accuracy


# The committed English clips with reference texts: WER is counted over all of them.
WER_CLIPS = [("long.mp3", "long.txt"), ("speech.wav", "speech.txt"), ("short.wav", "short.txt")]


def bench_engine(ctx: Ctx, sec: Section) -> None:
    long_mp3 = FIXTURES / "long.mp3"
    reps = ctx.pick(3, 1)
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise RuntimeError("faster-whisper is not installed: .venv/bin/pip install -r bench/requirements.txt") from None
    # openai: plain openai-whisper transcribe(); faster: plain faster-whisper int8, the
    # fastest CPU peer; ours-*: whisper-mcp's engine as the service runs it.
    names = ["openai", "faster", "ours-ct2", "ours-vad"]
    with contextlib.ExitStack() as stack:
        helpers = {name: stack.enter_context(Helper(name, ctx.workdir)) for name in names}
        for h in helpers.values():  # warm-up on a short clip
            h.call(op="transcribe", path=str(FIXTURES / "short.wav"))
        times: dict[str, list[float]] = {name: [] for name in helpers}
        texts: dict[str, dict[str, str]] = {name: {} for name in helpers}
        audio_s = 0.0
        for i in range(reps):
            for k in range(len(names)):  # rotate the order each repetition
                name = names[(i + k) % len(names)]
                out = helpers[name].call(op="transcribe", path=str(long_mp3))
                times[name].append(out["seconds"])
                texts[name]["long.mp3"] = out["text"]
                audio_s = out["audio_s"]
        for name, h in helpers.items():  # accuracy only: the other committed clips
            for clip, _ in WER_CLIPS[1:]:
                texts[name][clip] = h.call(op="transcribe", path=str(FIXTURES / clip))["text"]
        loads = {name: h.ready["load_s"] for name, h in helpers.items()}
        rss = {name: mib(h.call(op="rss")["hwm_kb"]) for name, h in helpers.items()}
        threads = helpers["openai"].ready.get("torch_threads")
    rtf = {name: median(t) / audio_s for name, t in times.items()}
    fw = "faster-whisper " + ("int8" if DEVICE == "cpu" else "float16")
    refs = {clip: (FIXTURES / ref).read_text() for clip, ref in WER_CLIPS}
    wers = {name: wer([(refs[clip], texts[name][clip]) for clip in refs]) * 100 for name in names}
    long_wers = {name: wer([(refs["long.mp3"], texts[name]["long.mp3"])]) * 100 for name in names}
    fastest = min(("ours-ct2", "ours-vad"), key=lambda n: rtf[n])
    label = {
        "ours-ct2": "--engine ctranslate2",
        "ours-vad": "--engine ctranslate2 --vad-batching",
    }  # default compute type
    sec.add(
        f"openai-whisper RTF on long.mp3 (62 s), {threads} threads", rtf["openai"], "x RT", "", None, None, "", "", None
    )
    sec.add(
        f"{fw} RTF on long.mp3", rtf["faster"], "x RT", "openai-whisper RTF", rtf["openai"],
        rtf["openai"] / rtf["faster"], "speed-up", "", None,
    )  # fmt: skip
    sec.add(
        f"whisper-mcp fastest ({label[fastest]}) RTF", rtf[fastest], "x RT", f"{fw} RTF", rtf["faster"],
        rtf["faster"] / rtf[fastest], "speed-up", ">= 1.0x", rtf[fastest] <= rtf["faster"],
    )  # fmt: skip
    other = "ours-vad" if fastest == "ours-ct2" else "ours-ct2"
    sec.add(
        f"  whisper-mcp {label[other]} RTF", rtf[other], "x RT", f"{fw} RTF", rtf["faster"],
        rtf["faster"] / rtf[other], "speed-up", "", None,
    )  # fmt: skip
    sec.add("openai-whisper WER, committed English clips", wers["openai"], "%", "", None, None, "", "", None)
    sec.add(
        f"{fw} WER", wers["faster"], "%", "openai-whisper WER", wers["openai"],
        (wers["faster"] / wers["openai"]) if wers["openai"] else None, "fw/ow", "", None,
    )  # fmt: skip
    sec.add(
        f"whisper-mcp fastest ({label[fastest]}) WER", wers[fastest], "%", "openai-whisper WER", wers["openai"],
        (wers[fastest] / wers["openai"]) if wers["openai"] else None, "ours/ow", "<= openai-whisper",
        wers[fastest] <= wers["openai"],
    )  # fmt: skip
    sec.add(
        f"  whisper-mcp {label[other]} WER", wers[other], "%", "openai-whisper WER", wers["openai"],
        (wers[other] / wers["openai"]) if wers["openai"] else None, "ours/ow", "", None,
    )  # fmt: skip
    sec.details.update(
        reps=reps, audio_s=audio_s, seconds=times, rtf=rtf, wer_percent=wers, long_mp3_wer_percent=long_wers,
        load_s=loads, peak_rss_mib=rss, texts=texts, wer_clips=[c for c, _ in WER_CLIPS],
        settings="greedy (openai: beam_size unset; faster: beam_size=1, best_of=1), fallback temperatures 0..1, "
        "condition_on_previous_text, no VAD (ours-vad: VAD chunks, batch of 8, no timestamp tokens, first temperature only); "
        "CTranslate2 int8, cpu_threads = nproc; audio decoded once with whisper_mcp.engines.audio.decode_audio (untimed); "
        "WER with openai-whisper's EnglishTextNormalizer, all edits over all reference words; "
        "medians of reps, engines interleaved",
    )  # fmt: skip
    sec.notes.append(
        "per-run seconds: "
        + ", ".join(f"{n} {'/'.join(f'{x:.2f}' for x in t)}" for n, t in times.items())
        + "; WER on long.mp3 alone: "
        + ", ".join(f"{n} {w:.1f}%" for n, w in long_wers.items())
        + "; peak RSS: "
        + ", ".join(f"{n} {r:.0f} MiB" for n, r in rss.items())
    )


# --------------------------------------------------------------------------
# 3. queue throughput


def make_clips(directory: Path, count: int, seed: int = 1) -> list[Path]:
    audio = decoded(FIXTURES / "long.mp3")
    rng = random.Random(seed)
    total = len(audio) / SAMPLE_RATE
    paths = []
    for i in range(count):
        length = rng.uniform(5.0, 10.0)
        start = rng.uniform(0.0, total - length)
        a, b = int(start * SAMPLE_RATE), int((start + length) * SAMPLE_RATE)
        path = directory / f"clip{i:02d}.wav"
        write_wav(path, [audio[a:b]])
        paths.append(path)
    return paths


async def submit_all(url: str, paths: list[Path]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=len(paths))) as client:

        async def one(path: Path) -> dict[str, Any]:
            r = await client.post(
                "/transcribe", files={"file": (path.name, path.read_bytes(), "audio/wav")}, data={"cache": "false"}
            )
            if r.status_code != 202:
                raise RuntimeError(f"POST {path.name}: {r.status_code} {r.text[:200]}")
            return r.json()

        return list(await asyncio.gather(*(one(p) for p in paths)))


def run_one_by_one(client: httpx.Client, clips: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """Submit, wait (poll every POLL_S), next. Span: first submit -> last finished_at."""
    t0 = time.time()
    records = [completed(wait_done(client, submit(client, p)["job_id"])) for p in clips]
    return max(r["finished_at"] for r in records) - t0, records


def run_at_once(url: str, client: httpx.Client, clips: list[Path]) -> tuple[float, list[dict[str, Any]], float]:
    """All uploads concurrently, then wait on /health (one cheap request per 100 ms)
    until the queue is empty and nothing runs. Span: first submit -> last finished_at."""
    t0 = time.time()
    jobs = asyncio.run(submit_all(url, clips))
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


# The queue section runs on each engine: the default (ctranslate2) and openai.
QUEUE_ENGINES: dict[str, tuple[str, ...]] = {"default (ctranslate2)": (), "--engine openai": ("--engine", "openai")}


def bench_queue(ctx: Ctx, sec: Section) -> None:
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
    # seq, batch, batch, seq (ABBA), so drift in the machine's load hits both alike.
    order = ["seq", "batch", "batch", "seq"]
    spans: dict[str, list[float]] = {"seq": [], "batch": []}
    inference: dict[str, list[float]] = {"seq": [], "batch": []}
    accepted: list[float] = []
    with serving(ctx.workdir, *args) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        completed(wait_done(client, submit(client, FIXTURES / "speech.wav")["job_id"]))  # warm-up
        for mode in order:
            time.sleep(0.5)
            if mode == "seq":
                span, records = run_one_by_one(client, clips)
            else:
                span, records, acc = run_at_once(srv.url, client, clips)
                accepted.append(acc)
            spans[mode].append(span)
            inference[mode].append(sum(r["finished_at"] - r["started_at"] for r in records))
    # Extra, informational: all at once with batching off, so queueing alone is seen apart from batching.
    spans["unbatched"] = []
    with (
        serving(ctx.workdir, *args, "--batch-size", "1") as srv,
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


# --------------------------------------------------------------------------
# 4. pick-up latency


def bench_pickup(ctx: Ctx, sec: Section) -> None:
    n = ctx.pick(20, 10)
    clip = FIXTURES / "short.wav"
    pickup, client_pickup, processing, upload = [], [], [], []
    with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        completed(wait_done(client, submit(client, clip)["job_id"]))  # warm-up
        for _ in range(n):
            time.sleep(0.3)  # let the worker go idle (blocked waiting for work)
            t0 = time.perf_counter()
            job = submit(client, clip)
            t_202 = time.time()
            upload.append(time.perf_counter() - t0)
            rec = completed(wait_done(client, job["job_id"], poll=0.05))
            pickup.append(rec["started_at"] - rec["created_at"])
            client_pickup.append(rec["started_at"] - t_202)
            processing.append(rec["finished_at"] - rec["started_at"])
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
        "started_at - (client receives 202): median %.1f ms (negative: the job started before the 202 arrived); "
        "upload->202 median %.1f ms" % (median(client_pickup) * 1000, median(upload) * 1000)
    )


# --------------------------------------------------------------------------
# 5. responsiveness under load


POLLERS = 50
POLLER_INTERVAL_S = 0.25  # each poller's pause between requests (about 200 req/s in all)


class RawHttp:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads the
    answers with no parsing beyond the status line and Content-Length. The
    pollers use it instead of httpx: 50 httpx clients in one Python process
    cost about a millisecond of client CPU per request, which queued up in
    this process and showed as server latency; 50 real pollers are 50
    processes (agents, load balancers), each with its own CPU."""

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(
                int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length"
            )
            return int(lines[0].split()[1]), await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, StopIteration, ValueError, IndexError):
            await self.close()
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def poll_storm(url: str, status_path: str, stop: Callable[[], bool], watch_job: bool) -> dict[str, Any]:
    """50 pollers alternating /health and ``status_path`` until ``stop()``,
    each on its own keep-alive connection (RawHttp).

    With ``watch_job`` the pollers also stop once the status they read is final."""
    lat: dict[str, list[float]] = {"health": [], "status": []}
    errors = 0
    error_samples: list[str] = []
    done = asyncio.Event()

    async def poller(i: int) -> None:
        nonlocal errors
        rng = random.Random(i)
        conn = RawHttp(url)
        await asyncio.sleep(rng.random() * POLLER_INTERVAL_S)
        first = True
        k = i
        try:
            while not (done.is_set() or stop()):
                kind = "health" if k % 2 == 0 else "status"
                k += 1
                t = time.perf_counter()
                try:
                    code, body = await conn.get("/health" if kind == "health" else status_path)
                    dt = time.perf_counter() - t
                    if code != 200:
                        errors += 1
                        if len(error_samples) < 5:
                            error_samples.append(f"{code} {body[:120]!r}")
                    elif kind == "status" and watch_job and json.loads(body).get("status") in FINISHED:
                        done.set()
                except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                    errors += 1
                    dt = None
                    if len(error_samples) < 5:
                        error_samples.append(f"{type(exc).__name__}: {exc}")
                if dt is not None and not first:  # the first request also opens the connection
                    lat[kind].append(dt)
                first = False
                await asyncio.sleep(POLLER_INTERVAL_S)
        finally:
            await conn.close()

    lag: list[float] = []

    async def lag_monitor() -> None:
        # How late the client's own event loop wakes up: the part of the
        # measured latency that is the client's, not the server's.
        while not (done.is_set() or stop()):
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag.append(time.perf_counter() - t - 0.01)

    t0 = time.perf_counter()
    await asyncio.gather(lag_monitor(), *(poller(i) for i in range(POLLERS)))
    elapsed = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "error_samples": error_samples, "elapsed_s": elapsed, "requests": sum(len(v) for v in lat.values()),
            "client_lag_p50_ms": pct(lag, 50) * 1e3, "client_lag_p99_ms": pct(lag, 99) * 1e3}  # fmt: skip


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


def bench_responsive(ctx: Ctx, sec: Section) -> None:
    repeats = ctx.pick(3, 2)
    idle_s = ctx.pick(8.0, 5.0)
    busy_s = ctx.pick(20.0, 10.0)  # pollers run this long into the transcription (or until it ends)
    long_wav = ctx.workdir / f"long_x{repeats}.wav"
    audio_s = write_wav(
        long_wav, concatenated(decoded(FIXTURES / "long.mp3"), 62.0 * repeats + 1.0 * (repeats - 1), seed=5)
    )
    with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
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
        with serving(ctx.workdir, *flags) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
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


# --------------------------------------------------------------------------
# 6. memory


def multipart_wav_stream(data_bytes: int, boundary: str, chunk: int = 1 << 20) -> tuple[Iterator[bytes], int]:
    """A multipart body whose file is a valid 16 kHz mono 16-bit WAV of ``data_bytes``
    of faint noise, produced as it is sent (the client never holds it)."""
    header = b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVE"
    header += b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += SAMPLE_RATE.to_bytes(4, "little") + (SAMPLE_RATE * 2).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + data_bytes.to_bytes(4, "little")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="cache"\r\n\r\nfalse\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + header
    tail = f"\r\n--{boundary}--\r\n".encode()
    noise = (np.random.default_rng(3).standard_normal(chunk // 2) * 30).astype("<i2").tobytes()

    def gen() -> Iterator[bytes]:
        yield head
        left = data_bytes
        while left > 0:
            piece = noise if left >= len(noise) else noise[:left]
            yield piece
            left -= len(piece)
        yield tail

    return gen(), len(head) + data_bytes + len(tail)


def peak_during_job(client: httpx.Client, sampler: RssSampler, path: Path, cap_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    job = submit(client, path)
    deadline = time.monotonic() + cap_s
    cancelled_at = None
    while True:
        rec = client.get(f"/status/{job['job_id']}").json()
        if rec["status"] in FINISHED:
            break
        if cancelled_at is None and time.monotonic() > deadline:
            client.delete(f"/jobs/{job['job_id']}")  # stops at the next 30 s window
            cancelled_at = rec.get("progress", 0.0)
        time.sleep(0.2)
    samples = sampler.window(t0)
    return {"peak_kb": max(samples), "status": rec["status"], "progress_at_cancel": cancelled_at,
            "seconds": time.monotonic() - t0, "record": rec}  # fmt: skip


def bench_memory(ctx: Ctx, sec: Section) -> None:
    long_s = ctx.pick(1800.0, 300.0)
    upload_bytes = ctx.pick(1 << 30, 256 << 20)
    cap_s = ctx.pick(300.0, 60.0)  # a job still running then is cancelled (peak comes early: decode + mel)
    big_wav = ctx.workdir / f"long_{int(long_s)}s.wav"
    write_wav(big_wav, concatenated(decoded(FIXTURES / "long.mp3"), long_s, seed=7))
    with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        sampler = RssSampler(srv.pid)
        sampler.start()
        try:
            time.sleep(2.0)
            t = time.monotonic()
            time.sleep(2.0)
            idle_kb = median(sampler.window(t))
            one = peak_during_job(client, sampler, FIXTURES / "long.mp3", cap_s)
            after_one_kb = sampler.latest()
            big = peak_during_job(client, sampler, big_wav, cap_s)
            after_big_kb = sampler.latest()
        finally:
            sampler.stop()
    # Baseline for the idle figure: a bare process with whisper imported and the model loaded.
    with Helper("openai", ctx.workdir) as helper:
        time.sleep(1.0)
        bare_kb = helper.call(op="rss")["rss_kb"]
    # The upload on a fresh server, so memory freed by earlier jobs cannot hide growth.
    # Where the service has upload limits, raise the size limit so the whole body is
    # read, and cap the duration so the (hours-long) upload is refused after probing
    # instead of becoming a job.
    limits: list[str] = []
    help_text = subprocess.run(
        [PY, "-m", "whisper_mcp", "serve", "--help"], cwd=TREE, env=sub_env(), capture_output=True, text=True
    ).stdout
    if "--max-upload-mb" in help_text:
        limits += ["--max-upload-mb", str((upload_bytes >> 20) + 16)]
    if "--max-audio-seconds" in help_text:
        limits += ["--max-audio-seconds", "3600"]
    with serving(ctx.workdir, *limits) as srv:
        sampler = RssSampler(srv.pid)
        sampler.start()
        try:
            time.sleep(1.5)
            before_kb = sampler.latest()
            boundary = "benchboundary7MA4YWxkTrZu0gW"
            body, length = multipart_wav_stream(upload_bytes, boundary)
            t0 = time.monotonic()
            try:
                r = httpx.post(
                    f"{srv.url}/transcribe", content=body,
                    headers={"content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(length)},
                    timeout=httpx.Timeout(900.0),
                )  # fmt: skip
                answer = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                answer = f"{type(exc).__name__}: {exc}"
            upload_s = time.monotonic() - t0
            # Should it have become a job (202), the worker would now decode hours of
            # audio into memory: stop the server before it does.
            srv.kill()
            during = sampler.window(t0, t0 + upload_s)
        finally:
            sampler.stop()
    idle = mib(idle_kb)
    p1, p30 = mib(one["peak_kb"]), mib(big["peak_kb"])
    growth = mib(max(during) - before_kb)
    label = f"{int(long_s // 60)}-min"
    sec.add(
        "server RSS idle, model loaded", idle, "MiB", "bare process, whisper + model", mib(bare_kb),
        idle / mib(bare_kb), "server/bare", "", None,
    )  # fmt: skip
    sec.add("server RSS peak, 1-min file (long.mp3)", p1, "MiB", "idle", idle, p1 / idle, "peak/idle", "", None)
    sec.add(
        f"server RSS peak, {label} WAV" + ("" if big["status"] == "completed" else f" ({big['status']} at cap)"),
        p30, "MiB", "1-min peak", p1, p30 / p1, f"{label}/1-min", "<= 1-min + 100 MB", (p30 - p1) * 2**20 <= 100e6,
    )  # fmt: skip
    sec.add(
        f"server RSS growth during a {upload_bytes >> 20} MiB upload", growth, "MiB", "upload size",
        upload_bytes / 2**20, growth / (upload_bytes / 2**20), "growth/size", "< 32 MB", growth * 2**20 < 32e6,
    )  # fmt: skip
    sec.details.update(
        idle_kb=idle_kb, bare_process_kb=bare_kb, one_min=one, long=dict(big, seconds_audio=long_s), after_one_kb=after_one_kb, after_long_kb=after_big_kb,
        upload={"bytes": upload_bytes, "seconds": upload_s, "answer": answer, "server_flags": limits, "rss_before_kb": before_kb,
                "rss_peak_kb": max(during), "samples": len(during)},
    )  # fmt: skip
    sec.notes.append(
        "1-min job %.1f s, %s job %.1f s (%s); RSS after them %.0f / %.0f MiB"
        % (one["seconds"], label, big["seconds"], big["status"], mib(after_one_kb), mib(after_big_kb))
    )
    sec.notes.append(
        "upload of %d MiB (server flags: %s) took %.1f s (%.0f MiB/s), answered: %s"
        % (upload_bytes >> 20, " ".join(limits) or "none", upload_s, (upload_bytes >> 20) / upload_s, answer[:160])
    )


# --------------------------------------------------------------------------
# 7. several replicas on PostgreSQL


def start_together(servers: list[ServerProcess], timeout: float = 300.0) -> None:
    """Start servers at once (their model loads overlap); stop them all if one fails."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(servers)) as pool:
        errors = [e for e in pool.map(lambda s: _start_error(s, timeout), servers) if e is not None]
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]


def _start_error(server: ServerProcess, timeout: float) -> BaseException | None:
    try:
        server.start(timeout)
    except BaseException as exc:  # reported by start_together
        return exc
    return None


def pickups(client: httpx.Client, clip: Path, n: int) -> dict[str, list[float]]:
    """``n`` jobs one at a time onto idle workers: started_at - created_at (server
    clocks, one machine), started_at - the client's receipt of the 202, run time."""
    out: dict[str, list[float]] = {"pickup": [], "after_202": [], "run": []}
    for _ in range(n):
        time.sleep(0.3)  # the workers go idle (blocked waiting for work)
        job = submit(client, clip)
        t_202 = time.time()
        rec = completed(wait_done(client, job["job_id"], poll=0.05))
        out["pickup"].append(rec["started_at"] - rec["created_at"])
        out["after_202"].append(rec["started_at"] - t_202)
        out["run"].append(rec["finished_at"] - rec["started_at"])
    return out


def spread_at_once(urls: list[str], clips: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """All clips uploaded concurrently, round-robin over ``urls``; waits for every job
    (on the first URL: any replica answers). Span: first submit -> last finished_at."""

    async def go() -> list[dict[str, Any]]:
        clients = [httpx.AsyncClient(base_url=u, timeout=300) for u in urls]
        try:

            async def one(i: int, path: Path) -> dict[str, Any]:
                r = await clients[i % len(clients)].post(
                    "/transcribe", files={"file": (path.name, path.read_bytes(), "audio/wav")}, data={"cache": "false"}
                )
                if r.status_code != 202:
                    raise RuntimeError(f"POST {path.name}: {r.status_code} {r.text[:200]}")
                return r.json()

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(clips))))
        finally:
            for c in clients:
                await c.aclose()

    t0 = time.time()
    jobs = asyncio.run(go())
    with httpx.Client(base_url=urls[0], timeout=60) as client:
        records = [completed(wait_done(client, j["job_id"], poll=0.1)) for j in jobs]
    return max(r["finished_at"] for r in records) - t0, records


async def status_storm(targets: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """POLLERS pollers for ``seconds``, poller i on ``targets[i % len]`` (url, status
    path), each alternating /health and the status path with POLLER_INTERVAL_S pauses;
    the first request of each poller (connection set-up) is dropped."""
    lat: dict[str, list[float]] = {"health": [], "status": []}
    errors: list[str] = []
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=POLLERS, max_keepalive_connections=POLLERS)
    clients = {url: httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url, _ in targets}
    try:

        async def poller(i: int) -> None:
            url, status_path = targets[i % len(targets)]
            await asyncio.sleep(random.Random(i).random() * POLLER_INTERVAL_S)
            k, first = i, True
            while time.monotonic() < end:
                kind = "health" if k % 2 == 0 else "status"
                k += 1
                t = time.perf_counter()
                try:
                    r = await clients[url].get("/health" if kind == "health" else status_path)
                    dt: float | None = time.perf_counter() - t
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError as exc:
                    dt = None
                    errors.append(f"{type(exc).__name__}: {exc}")
                if dt is not None and not first:
                    lat[kind].append(dt)
                first = False
                await asyncio.sleep(POLLER_INTERVAL_S)

        await asyncio.gather(*(poller(i) for i in range(POLLERS)))
    finally:
        for c in clients.values():
            await c.aclose()
    return {"lat": lat, "errors": len(errors), "error_samples": errors[:5]}


def running_on(clients: list[httpx.Client], job_ids: list[str], timeout: float = 120.0) -> None:
    """Wait until every job is processing."""
    deadline = time.monotonic() + timeout
    while any(clients[0].get(f"/status/{j}").json()["status"] != "processing" for j in job_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not all running: {[clients[0].get(f'/status/{j}').json() for j in job_ids]}")
        time.sleep(0.05)


def bench_replicas(ctx: Ctx, sec: Section) -> None:
    """Three replicas on one PostgreSQL database and one storage folder vs one
    server on SQLite, all on this machine, with default settings."""
    from whisper_mcp.testing import PostgresCluster, ServerProcess

    if PostgresCluster.binaries() is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    n_pick = ctx.pick(15, 6)
    n_clips = ctx.pick(12, 6)
    storm_s = ctx.pick(10.0, 5.0)
    clip = FIXTURES / "short.wav"
    clips_dir = ctx.workdir / "clips"
    clips_dir.mkdir()
    clips = make_clips(clips_dir, n_clips, seed=5)
    busy_wav = ctx.workdir / "busy.wav"  # keeps a worker busy for the cross-replica pick-up and the storm
    write_wav(busy_wav, concatenated(decoded(FIXTURES / "long.mp3"), ctx.pick(240.0, 150.0), seed=11))

    def server(storage: Path, name: str, *extra: str) -> ServerProcess:
        return ServerProcess(
            storage, ctx.workdir / f"{name}.log", "--model", MODEL, "--device", DEVICE, *extra,
            port=free_port(), env=sub_env(), cwd=TREE,
        )  # fmt: skip

    rates: dict[str, list[float]] = {"sqlite": [], "pg1": [], "pg3": []}
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()

    with PostgresCluster() as cluster:
        url = cluster.database()
        shared = ctx.workdir / "shared-storage"
        replica = {
            name: server(shared, f"replica-{name}", "--database-url", url, "--replica-id", name) for name in "abc"
        }
        sqlite = server(ctx.workdir / "sqlite-storage", "sqlite")
        start_together([sqlite, replica["a"]])
        try:
            s_client = httpx.Client(base_url=sqlite.url, timeout=300)
            a_client = httpx.Client(base_url=replica["a"].url, timeout=300)
            for c in (s_client, a_client):
                completed(wait_done(c, submit(c, FIXTURES / "speech.wav")["job_id"]))  # warm-up
            phase("start SQLite server and replica a, warm-up")
            # Pick-up: one idle worker, SQLite vs PostgreSQL (interleaved halves).
            pick = {"sqlite": pickups(s_client, clip, n_pick // 2), "pg1": pickups(a_client, clip, n_pick // 2)}
            for name, c in (("pg1", a_client), ("sqlite", s_client)):
                for k, v in pickups(c, clip, n_pick - n_pick // 2).items():
                    pick[name][k] += v
            phase("pick-up, SQLite and 1 replica")
            # Throughput, one server each (rounds A B ... B A with 3 replicas in the middle).
            rates["sqlite"].append(n_clips / (spread_at_once([sqlite.url], clips)[0] / 60))
            rates["pg1"].append(n_clips / (spread_at_once([replica["a"].url], clips)[0] / 60))

            phase("throughput, first rounds of SQLite and 1 replica")
            start_together([replica["b"], replica["c"]])
            urls = [r.url for r in replica.values()]
            clients = [a_client] + [httpx.Client(base_url=u, timeout=300) for u in urls[1:]]
            for c in clients[1:]:
                completed(wait_done(c, submit(c, FIXTURES / "speech.wav")["job_id"]))  # warm-up
            phase("start replicas b and c, warm-up")
            # Cross-replica pick-up: jobs sent to the replica busy with a long file,
            # so another, idle one must learn of them (NOTIFY) and take them.
            busy = submit(a_client, busy_wav)["job_id"]
            running_on(clients, [busy])
            with psycopg_connect(url) as conn:
                owner = conn.execute("SELECT lease_owner FROM jobs WHERE job_id = %s", (busy,)).fetchone()[0]
            busy_client = clients["abc".index(owner)]
            pick["pg_notify"] = pickups(busy_client, clip, n_pick)
            busy_throughout = a_client.get(f"/status/{busy}").json()["status"] == "processing"
            a_client.delete(f"/jobs/{busy}")
            completed_or_cancelled = wait_done(a_client, busy)
            phase("pick-up across replicas")
            # Status under load: a long file running on every replica, pollers spread over the three.
            longs = [submit(c, busy_wav)["job_id"] for c in clients]
            running_on(clients, longs)
            storm3 = asyncio.run(status_storm([(u, f"/status/{j}") for u, j in zip(urls, longs, strict=True)], storm_s))
            for j in longs:
                a_client.delete(f"/jobs/{j}")
            for j in longs:
                wait_done(a_client, j)
            s_long = submit(s_client, busy_wav)["job_id"]
            running_on([s_client], [s_long])
            storm1 = asyncio.run(status_storm([(sqlite.url, f"/status/{s_long}")], storm_s))
            s_client.delete(f"/jobs/{s_long}")
            wait_done(s_client, s_long)
            phase("status under load, 3 replicas and SQLite")
            # Throughput with three replicas, two rounds.
            for _ in range(2):
                rates["pg3"].append(n_clips / (spread_at_once(urls, clips)[0] / 60))
            replica["b"].stop()
            replica["c"].stop()
            rates["pg1"].append(n_clips / (spread_at_once([replica["a"].url], clips)[0] / 60))
            rates["sqlite"].append(n_clips / (spread_at_once([sqlite.url], clips)[0] / 60))
            phase("throughput, 3 replicas, then the last rounds of 1 replica and SQLite")
            for c in clients + [s_client]:
                c.close()
        finally:
            for r in [sqlite, *replica.values()]:
                r.stop()

    ms = {k: [x * 1000 for x in v["pickup"]] for k, v in pick.items()}
    sec.add(
        "pick-up, PostgreSQL, 1 replica, idle: created_at->started_at, median", median(ms["pg1"]), "ms",
        "SQLite, same", median(ms["sqlite"]), median(ms["pg1"]) / median(ms["sqlite"]), "pg/sqlite", "< 20 ms",
        median(ms["pg1"]) < 20,
    )  # fmt: skip
    sec.add(
        "pick-up, PostgreSQL, sent to a busy replica, taken by an idle one (NOTIFY), median", median(ms["pg_notify"]),
        "ms", "SQLite, 1 server idle", median(ms["sqlite"]), median(ms["pg_notify"]) / median(ms["sqlite"]),
        "pg/sqlite", "< 20 ms", median(ms["pg_notify"]) < 20,
    )  # fmt: skip
    pg1, pg3, lite = (sum(rates[k]) / len(rates[k]) for k in ("pg1", "pg3", "sqlite"))
    sec.add(
        f"throughput, 3 replicas (PostgreSQL), {n_clips} clips at once, spread", pg3, "clips/min",
        "1 replica (PostgreSQL)", pg1, pg3 / pg1, "3/1", "", None,
    )  # fmt: skip
    sec.add(
        f"throughput, 1 replica (PostgreSQL), {n_clips} clips at once", pg1, "clips/min", "1 server (SQLite)", lite,
        pg1 / lite, "pg/sqlite", "", None,
    )  # fmt: skip
    s3, s1 = pct(storm3["lat"]["status"], 99) * 1000, pct(storm1["lat"]["status"], 99) * 1000
    sec.add(
        f"/status p99, {POLLERS} pollers over 3 replicas, each transcribing", s3, "ms",
        "1 server (SQLite), transcribing", s1, s3 / s1, "3 replicas/1", "< 20 ms *", s3 < 20,
    )  # fmt: skip
    sec.details.update(
        pickup_ms=ms, pickup_after_202_ms={k: [x * 1000 for x in v["after_202"]] for k, v in pick.items()},
        run_ms={k: [x * 1000 for x in v["run"]] for k, v in pick.items()}, busy_throughout=busy_throughout,
        busy_replica=owner, rates_clips_per_min=rates, clips=n_clips, phase_seconds=phases,
        storm3={"health_p99_ms": pct(storm3["lat"]["health"], 99) * 1000, "status_p50_ms": pct(storm3["lat"]["status"], 50) * 1000,
                "requests": sum(len(v) for v in storm3["lat"].values()), "errors": storm3["errors"], "error_samples": storm3["error_samples"]},
        storm1={"health_p99_ms": pct(storm1["lat"]["health"], 99) * 1000, "status_p50_ms": pct(storm1["lat"]["status"], 50) * 1000,
                "requests": sum(len(v) for v in storm1["lat"].values()), "errors": storm1["errors"], "error_samples": storm1["error_samples"]},
        busy_job=completed_or_cancelled.get("status"),
    )  # fmt: skip
    after = {k: median(pick[k]["after_202"]) * 1000 for k in ("sqlite", "pg1", "pg_notify")}
    busy_note = "ran its long file throughout" if busy_throughout else "FINISHED its long file early (figure mixed)"
    sec.notes.append(
        f"pick-up p95: SQLite {pct(ms['sqlite'], 95):.1f}, PostgreSQL 1 replica {pct(ms['pg1'], 95):.1f}, "
        f"cross-replica (NOTIFY) {pct(ms['pg_notify'], 95):.1f} ms; started_at - the client's 202, median: "
        f"{after['sqlite']:.1f} / {after['pg1']:.1f} / {after['pg_notify']:.1f} ms; the busy replica ({owner}) {busy_note}"
    )
    rounds = {k: "/".join(f"{x:.1f}" for x in rates[k]) for k in rates}
    sec.notes.append(
        f"throughput rounds (clips/min): SQLite {rounds['sqlite']}, PostgreSQL 1 replica {rounds['pg1']}, "
        f"3 replicas {rounds['pg3']}; every replica on this machine's {os.cpu_count()} cores with default "
        "threads: 3 replicas share the same CPUs"
    )
    s3d, s1d = sec.details["storm3"], sec.details["storm1"]
    sec.notes.append(
        f"under load: /health p99 3 replicas {s3d['health_p99_ms']:.1f} ms vs 1 server {s1d['health_p99_ms']:.1f} ms; "
        f"/status p50 {s3d['status_p50_ms']:.1f} vs {s1d['status_p50_ms']:.1f} ms; "
        f"{s3d['requests']} + {s1d['requests']} requests, {s3d['errors']} + {s1d['errors']} errors"
    )


def timed_job(client: httpx.Client, sampler: RssSampler, path: Path, **fields: str) -> tuple[float, int, dict]:
    """Seconds from submission to completion, peak RSS meanwhile, and the record."""
    t0 = time.monotonic()
    record = completed(wait_done(client, submit(client, path, **fields)["job_id"]))
    return time.monotonic() - t0, max(sampler.window(t0)), record


def bench_diarize(ctx: Ctx, sec: Section) -> None:
    """Speaker diarization (senko) on the two-voice dialogue: its time as a fraction
    of the transcription's, and the server's peak memory with and without it.
    Each server starts fresh, so a peak is not an earlier job's."""
    clip = FIXTURES / "dialogue.wav"
    runs = ctx.pick(3, 1)
    plain_s: list[float] = []
    diarized_s: list[float] = []
    peaks: dict[str, int] = {}
    for diarize in ("false", "true"):
        with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
            sampler = RssSampler(srv.pid)
            sampler.start()
            try:
                timed_job(client, sampler, clip)  # warm: the Whisper model (and the diarizer) loaded
                if diarize == "true":
                    first, _, _ = timed_job(client, sampler, clip, diarize="true")
                    sec.details["first_diarized_job_s"] = round(first, 3)  # includes loading senko
                for _ in range(runs):
                    took, peak, record = timed_job(client, sampler, clip, diarize=diarize)
                    (diarized_s if diarize == "true" else plain_s).append(took)
                    peaks[diarize] = max(peaks.get(diarize, 0), peak)
                sec.details[f"options_{diarize}"] = record.get("options")
            finally:
                sampler.stop()
    plain, diarized = median(plain_s), median(diarized_s)
    extra = max(0.0, diarized - plain)
    sec.add("39 s dialogue: transcription job", plain, "s", "", None, None, "", "", None)
    sec.add(
        "39 s dialogue: diarized job", diarized, "s", "plain job", plain, diarized / plain, "diarized/plain", "", None
    )
    sec.add("diarization time / transcription time", extra / plain * 100, "%", "", None, None, "", "", None)
    sec.add(
        "peak RSS, diarization on", mib(peaks["true"]), "MiB", "off", mib(peaks["false"]),
        peaks["true"] / peaks["false"], "on/off", "", None,
    )  # fmt: skip
    sec.notes.append(
        "diarization time = diarized job minus plain job (median of %d each, warm models, %s)" % (runs, MODEL)
    )


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# 8. the default service against its peers


def long_clips(workdir: Path) -> list[tuple[Path, str]]:
    """The long recordings timed: long.mp3, long.mp3 four times over (4 min,
    where batched decoding has chunks to batch), real speech (bench/audio),
    and --recording's if given."""
    text = (FIXTURES / "long.txt").read_text()
    four = workdir / "long_x4.wav"
    if not four.exists():
        write_wav(four, [decoded(FIXTURES / "long.mp3")] * 4)
    clips = [(FIXTURES / "long.mp3", text), (four, " ".join([text] * 4))]
    clips.append((real_speech(workdir), REAL_SPEECH_TEXT.read_text()))
    return clips + ([RECORDING] if RECORDING else [])


def real_speech(workdir: Path) -> Path:
    """bench/audio's two parts joined into ``workdir/real_speech.flac`` (once)."""
    out = workdir / "real_speech.flac"
    if not out.exists():
        sys.path.insert(0, str(BENCH / "audio"))
        import make_real_speech

        make_real_speech.join(make_real_speech.PARTS, out)
    return out


def start_helpers(names: list[str], workdir: Path, sec: Section, stack: contextlib.ExitStack) -> dict[str, Helper]:
    """The peers that start here; a missing optional one (pywhispercpp) is a note, not an error."""
    helpers: dict[str, Helper] = {}
    for name in names:
        try:
            helpers[name] = stack.enter_context(Helper(name, workdir))
        except RuntimeError as exc:
            sec.notes.append(f"row {name} skipped: {str(exc).strip().splitlines()[-1]}")
    return helpers


def bench_default(ctx: Ctx, sec: Section) -> None:
    # 5 rounds: one peer's lucky quiet minute once moved its minimum by 25%.
    rounds = ctx.pick(5, 1)
    timed = long_clips(ctx.workdir)
    accuracy = [(FIXTURES / c, (FIXTURES / r).read_text()) for c, r in WER_CLIPS[1:]]
    fw = "faster-whisper " + ("int8" if DEVICE == "cpu" else "float16")
    labels = {
        "service": "whisper-mcp, default settings (end to end)",
        "service-openai": "whisper-mcp --engine openai (end to end)",
        "faster": f"{fw}, in-process",
        "whispercpp": "whisper.cpp f16 (pywhispercpp), in-process",
        "openai": "openai-whisper, in-process",
    }
    with contextlib.ExitStack() as stack:
        helpers = start_helpers(["faster", "whispercpp", "openai"], ctx.workdir, sec, stack)
        servers = {
            "service": stack.enter_context(serving(ctx.workdir)),
            "service-openai": stack.enter_context(serving(ctx.workdir, "--engine", "openai")),
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


# --------------------------------------------------------------------------
# 9. a busy machine


@contextlib.contextmanager
def competitors(count: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``yes > /dev/null`` once per core (or ``count`` times): CPU-bound neighbours."""
    procs = [
        subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count or os.cpu_count() or 1)
    ]
    try:
        time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(5)


def bench_contention(ctx: Ctx, sec: Section) -> None:
    rounds = ctx.pick(3, 1)
    path = RECORDING[0] if RECORDING else FIXTURES / "long.mp3"
    variants: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {"service": ((), {})}
    variants["service --inference-nice 10"] = (("--inference-nice", "10"), {})
    if not ctx.quick:  # what the service did before it set a passive wait policy
        variants["service, OMP_WAIT_POLICY=ACTIVE"] = ((), {"OMP_WAIT_POLICY": "ACTIVE"})
    with contextlib.ExitStack() as stack:
        helpers = start_helpers(["faster"], ctx.workdir, sec, stack)
        clients = {
            name: stack.enter_context(
                httpx.Client(base_url=stack.enter_context(serving(ctx.workdir, *flags, env=env)).url, timeout=1800)
            )
            for name, (flags, env) in variants.items()
        }

        def run(name: str) -> float:
            if name in clients:
                return service_e2e(clients[name], path)["total_s"]
            return float(helpers[name].call(op="e2e", path=str(path))["seconds"])

        names = [*clients, *helpers]
        for name in names:
            run(name)  # warm-up
        quiet: dict[str, list[float]] = {n: [] for n in names}
        busy: dict[str, list[float]] = {n: [] for n in names}
        for i in range(rounds):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                quiet[name].append(run(name))
                with competitors():
                    busy[name].append(run(name))
    labels = {"service": "whisper-mcp default", "faster": "  faster-whisper int8, in-process"}
    labels["service, OMP_WAIT_POLICY=ACTIVE"] = "  whisper-mcp with OMP_WAIT_POLICY=ACTIVE (spinning threads)"
    labels["service --inference-nice 10"] = "  whisper-mcp --inference-nice 10"
    for name in names:
        q, b = min(quiet[name]), min(busy[name])
        default = name == "service"
        sec.add(
            f"{labels[name]}: {path.name} beside {os.cpu_count()} busy processes", b, "s", "quiet", q, b / q,
            "busy/quiet", "<= 2.5x" if default else "", (b / q <= 2.5) if default else None,
        )  # fmt: skip
    sec.notes.append(f"competitors: `yes > /dev/null`, one per core ({os.cpu_count()}); fair share is 2x; "
                     f"minimum of {rounds} interleaved round(s), quiet and busy alternating")  # fmt: skip
    sec.details.update(rounds=rounds, clip=path.name, quiet=quiet, busy=busy)


# --------------------------------------------------------------------------
# 10. silence and noise


def noise_clips(ctx: Ctx) -> dict[str, Path]:
    """Silence and noise, written as WAV files: name -> path."""
    rng = np.random.default_rng(11)
    seconds = ctx.pick(60.0, 30.0)
    n = int(seconds * SAMPLE_RATE)
    clips = {
        f"silence, {seconds:.0f} s": np.zeros(n, dtype=np.float32),
        f"faint hiss, {seconds:.0f} s": (rng.standard_normal(n) * 0.003).astype(np.float32),
        f"white noise, {seconds:.0f} s": (rng.standard_normal(n) * 0.1).astype(np.float32),
        f"brown noise, {seconds:.0f} s": _brown(rng, n),
    }
    paths = {}
    for i, (name, audio) in enumerate(clips.items()):
        paths[name] = ctx.workdir / f"noise{i}.wav"
        write_wav(paths[name], [audio])
    return paths


def bench_silence(ctx: Ctx, sec: Section) -> None:
    paths = noise_clips(ctx)
    texts: dict[str, str] = {}
    with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=600) as client:
        for name, path in paths.items():
            texts[name] = service_e2e(client, path)["text"].strip()
            words = len(normalise_words(texts[name]))
            sec.add(f"whisper-mcp default: words in {name}", words, "words", "", None, None, "", "<= 3", words <= 3)
    sec.details.update(texts=texts)
    sec.notes.append("transcripts: " + "; ".join(f"{k}: {v[:80]!r}" for k, v in texts.items()))


def bench_vad(ctx: Ctx, sec: Section) -> None:
    """vad_filter=true against false, per job on one default server: the speech
    clips (time, WER) and the silence and noise clips (time, words)."""
    rounds = ctx.pick(3, 1)
    speech = [(FIXTURES / c, (FIXTURES / r).read_text()) for c, r in WER_CLIPS]
    noise = noise_clips(ctx)
    times: dict[str, dict[bool, list[float]]] = {"speech": {False: [], True: []}, "noise": {False: [], True: []}}
    texts: dict[bool, dict[str, str]] = {False: {}, True: {}}
    with serving(ctx.workdir) as srv, httpx.Client(base_url=srv.url, timeout=900) as client:
        service_e2e(client, FIXTURES / "speech.wav", vad_filter="true")  # warm-up, VAD model loaded
        for r in range(rounds):
            for vad in (False, True) if r % 2 == 0 else (True, False):  # alternate the order
                flag = str(vad).lower()
                for kind, paths in (("speech", [p for p, _ in speech]), ("noise", list(noise.values()))):
                    total = 0.0
                    for path in paths:
                        out = service_e2e(client, path, vad_filter=flag)
                        total += out["total_s"]
                        texts[vad][path.name] = out["text"].strip()
                    times[kind][vad].append(total)
    wers = {vad: wer([(ref, texts[vad][p.name]) for p, ref in speech]) * 100 for vad in (False, True)}
    t_off, t_on = median(times["speech"][False]), median(times["speech"][True])
    sec.add(
        "speech clips (long.mp3, speech.wav, short.wav), vad_filter=true", t_on, "s", "vad_filter=false", t_off,
        t_off / t_on, "off/on", "", None,
    )  # fmt: skip
    sec.add("  WER, vad_filter=true", wers[True], "%", "vad_filter=false", wers[False], None, "", "", None)
    n_off, n_on = median(times["noise"][False]), median(times["noise"][True])
    sec.add(
        "silence and noise clips, vad_filter=true", n_on, "s", "vad_filter=false", n_off, n_off / n_on, "off/on",
        "", None,
    )  # fmt: skip
    for name, path in noise.items():
        w_on, w_off = (len(normalise_words(texts[v][path.name])) for v in (True, False))
        sec.add(
            f"  words in {name}, vad_filter=true", w_on, "words", "vad_filter=false", w_off, None, "", "0", w_on == 0
        )
    sec.details.update(times_s=times, wer_percent=wers, texts=texts, rounds=rounds)
    sec.notes.append(
        "default: vad_filter is on by default only if it is faster AND no worse in WER on the speech clips; "
        f"here speech {t_off:.2f} s off vs {t_on:.2f} s on, WER {wers[False]:.1f}% vs {wers[True]:.1f}%"
    )


def _brown(rng: np.random.Generator, n: int) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal(n))
    walk -= np.convolve(walk, np.ones(4001) / 4001, mode="same")  # no slow drift
    return (walk / (np.abs(walk).max() or 1.0) * 0.3).astype(np.float32)


SECTIONS: dict[str, tuple[str, Callable[[Ctx, Section], None]]] = {
    "warm": ("1. warm service vs in-process vs cold process", bench_warm),
    "engine": ("2. engine speed and accuracy: openai-whisper, faster-whisper int8, ours", bench_engine),
    "queue": ("3. queue throughput", bench_queue),
    "pickup": ("4. pick-up latency, idle worker", bench_pickup),
    "responsive": ("5. responsiveness during a long transcription", bench_responsive),
    "memory": ("6. server memory", bench_memory),
    "replicas": ("7. three replicas on PostgreSQL vs one server on SQLite", bench_replicas),
    "default": ("8. the default service vs faster-whisper, whisper.cpp, openai-whisper", bench_default),
    "contention": ("9. a busy machine: one CPU-bound competitor per core", bench_contention),
    "silence": ("10. silence and noise: (near) empty transcripts", bench_silence),
    "vad": ("11. vad_filter per job: speech time and WER, silence and noise", bench_vad),
    "diarize": ("12. speaker diarization: time beside transcription, peak memory on vs off", bench_diarize),
}
# Issue 14's "done when" figures in one command: bench/run.py --only done
GROUPS = {"done": ["default", "contention", "responsive", "silence"]}


def table(sections: list[Section]) -> str:
    header = ["figure", "value", "baseline", "ratio", "target", "result"]
    rows: list[list[str] | str] = []
    for sec in sections:
        rows.append(f"== {SECTIONS[sec.name][0]}  [{sec.name}, {sec.seconds:.0f} s, load {sec.load_at_start[0]:.2f}]")
        if sec.error:
            rows.append(f"   ERROR: {sec.error.strip().splitlines()[-1]}")
        for fig in sec.figures:
            rows.append(fig.cells())
        for note in sec.notes:
            rows.append(f"   note: {note}")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows if isinstance(r, list)]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append(r if isinstance(r, str) else "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global TREE, MODEL, DEVICE, RECORDING
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
        "--model", default=MODEL, help="model of every server and helper, default tiny.en (e.g. base on a GPU)"
    )
    ap.add_argument(
        "--device", default=DEVICE, choices=["cpu", "cuda"], help="device of every server and helper, default cpu"
    )
    ap.add_argument(
        "--tree",
        help="benchmark the whisper_mcp of another checkout (e.g. a `git archive` snapshot); default: this one",
    )
    args = ap.parse_args(argv)
    MODEL, DEVICE = args.model, args.device
    if args.tree:
        TREE = Path(args.tree).resolve()
        if not (TREE / "whisper_mcp" / "__init__.py").is_file():
            ap.error(f"{TREE} has no whisper_mcp package")
    if args.recording:
        recording = Path(args.recording).resolve()
        if not recording.is_file() or not recording.with_suffix(".txt").is_file():
            ap.error(f"--recording needs {recording} and its reference text {recording.with_suffix('.txt')}")
        RECORDING = (recording, recording.with_suffix(".txt").read_text())
    names = list(SECTIONS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    names = [section for n in names for section in GROUPS.get(n, [n])]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "sections": names,
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_before": loadavg(),
        "python": platform.python_version(),
        "model": MODEL,
        "device": DEVICE,
        "threads": "service default (torch default)",
        "tree": str(TREE),
        "git": git_state(),
    }
    print(f"whisper-mcp bench {meta['date']}  nproc={meta['nproc']}  cpu={meta['cpu']}  load={meta['load_before']}"
          f"  model={MODEL}  device={DEVICE}  mode={'quick' if args.quick else 'full'}  tree={TREE} ({meta['git']})", flush=True)  # fmt: skip
    if meta["load_before"][0] > 1.5:
        print(f"NOTE: machine busy (1-min load {meta['load_before'][0]} > 1.5): figures will be noisy", flush=True)
    results: list[Section] = []
    t_all = time.perf_counter()
    for name in names:
        sec = Section(name, load_at_start=loadavg())
        print(f"-- {SECTIONS[name][0]} ...", flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"whisper-bench-{name}-") as tmp:
            try:
                SECTIONS[name][1](Ctx(args.quick, Path(tmp)), sec)
            except Exception:
                sec.error = traceback.format_exc()
                print(sec.error, file=sys.stderr, flush=True)
        sec.seconds = time.perf_counter() - t0
        results.append(sec)
        for fig in sec.figures:
            print("   " + " | ".join(fig.cells()), flush=True)
    meta["load_after"] = loadavg()
    meta["seconds"] = round(time.perf_counter() - t_all, 1)
    meta["busy"] = max(meta["load_before"][0], *(s.load_at_start[0] for s in results)) > 1.5
    print()
    print(table(results))
    print("\n* target implied by the design (see bench/README.md), not set by the issue.")
    print(f"total {meta['seconds']:.0f} s; load average before {meta['load_before']}, after {meta['load_after']}"
          + ("  (machine busy: noisy)" if meta["busy"] else ""))  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "sections": [asdict(s) for s in results]}, indent=2, default=str))
    print(f"wrote {out}")
    return 1 if any(s.error for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
