"""Section diarize: speaker diarization beside transcription: its time
and the server's peak memory with it on and off."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.rss import RssSampler, mib
from bench.service import completed, serving, submit, wait_done
from bench.stats import median


def timed_job(client: httpx.Client, sampler: RssSampler, path: Path, **fields: str) -> tuple[float, int, dict]:
    """Seconds from submission to completion, peak RSS meanwhile, and the record."""
    t0 = time.monotonic()
    record = completed(wait_done(client, submit(client, path, **fields)["job_id"]))
    return time.monotonic() - t0, max(sampler.window(t0)), record


def run(ctx: Ctx, sec: Section) -> None:
    """Speaker diarization (senko) on the two-voice dialogue: its time as a fraction
    of the transcription's, and the server's peak memory with and without it.
    Each server starts fresh, so a peak is not an earlier job's."""
    clip = FIXTURES / "dialogue.wav"
    runs = ctx.pick(3, 1)
    plain_s: list[float] = []
    diarized_s: list[float] = []
    peaks: dict[str, int] = {}
    for diarize in ("false", "true"):
        with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
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
        f"diarization time = diarized job minus plain job (median of {runs} each, warm models, {ctx.model})"
    )
