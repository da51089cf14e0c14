"""Section realtime: live transcription (``/v1/realtime``) through the official
``openai`` SDK, real speech streamed at real-time pace with server VAD.
How soon each utterance's completed transcript follows its end, how soon its
first delta follows its start; the same with 2 and 4 sessions at once and
with 2 sessions beside a long batch job; whether the lag grows over a long
stream; and the live transcript's WER against the batch transcript's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.clips import REAL_SPEECH_TEXT, SAMPLE_RATE, concatenated, decoded, real_speech, write_wav
from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.service import completed, serving, submit, wait_done
from bench.stats import pct
from bench.wer import wer

RATE = 24000  # PCM16 at 24 kHz: what the protocol carries
CHUNK_S = 0.1  # the audio of one append: a microphone's pace
PAUSE_S = 1.2  # silence put between two recordings (server VAD ends an utterance after 0.5 s)
TAIL_S = 2.0  # silence after the last one, so its end is heard
SETTLE_S = 120.0  # after the audio, how long the last utterances may take to complete
SESSION = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
        }
    },
}
SONNETS = 3  # the first recordings of bench/audio: 150 s, left out of quick runs
SONNETS_END = "image dies with thee."  # where their reference text ends
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
FAILED = "conversation.item.input_audio_transcription.failed"


@dataclass
class Item:
    """One utterance as a client saw it (perf_counter times)."""

    started: float | None = None
    stopped: float | None = None
    end_ms: int | None = None  # audio_end_ms: where the server heard it end
    first_delta: float | None = None
    completed: float | None = None
    transcript: str = ""
    failed: str | None = None  # the failed event's message
    seen: list[str] = field(default_factory=list)  # its events' types, in order


@dataclass
class Stream:
    """One session's run: its utterances, the wall time each audio position was sent, lag events."""

    items: dict[str, Item] = field(default_factory=dict)
    sent_at: list[float] = field(default_factory=list)  # append i (CHUNK_S of audio) went out at
    lag_events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def done(self) -> list[Item]:
        return [i for i in self.items.values() if i.completed is not None]

    def after_stop(self) -> list[float]:
        """speech_stopped -> completed, per utterance."""
        return [i.completed - i.stopped for i in self.done() if i.stopped is not None and i.completed is not None]

    def to_first_delta(self) -> list[float]:
        """speech_started -> its first delta, per utterance that had one."""
        return [i.first_delta - i.started for i in self.items.values() if i.started and i.first_delta]

    def lag(self) -> list[tuple[float, float]]:
        """(audio position s, completed - when the utterance's last audio was sent), per utterance, in order."""
        out = []
        for item in self.done():
            if item.end_ms is None or item.completed is None:
                continue
            k = min(len(self.sent_at) - 1, max(0, int(item.end_ms / 1000 / CHUNK_S)))
            out.append((item.end_ms / 1000, item.completed - self.sent_at[k]))
        return sorted(out)

    def text(self) -> str:
        return " ".join(i.transcript for i in self.items.values() if i.transcript)


def pcm24k(samples: np.ndarray) -> bytes:
    """16 kHz float samples as 24 kHz PCM16 (linear interpolation)."""
    x = np.interp(np.arange(len(samples) * 3 // 2) / 1.5, np.arange(len(samples)), samples)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def recordings(workdir: Path) -> list[np.ndarray]:
    """bench/audio's 11 recordings, split again at the 0.5 s of digital silence that joins them."""
    speech = decoded(real_speech(workdir))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (speech == 0).astype(np.int8), [0]])))
    gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 0.4 * SAMPLE_RATE]
    bounds = [0, *(x for gap in gaps for x in gap), len(speech)]
    return [speech[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True)]


def utterances(ctx: Ctx) -> tuple[np.ndarray, str]:
    """Real speech with PAUSE_S of silence between recordings, and what is
    said: bench/audio's 11 recordings (quick: the 8 after the three sonnets,
    45 s), then (full runs) long.mp3, and speech.wav and short.wav."""
    pieces = recordings(ctx.workdir)
    said = REAL_SPEECH_TEXT.read_text().strip()
    if ctx.quick:
        pieces = pieces[SONNETS:]
        said = said.split(SONNETS_END, 1)[1]
    names = ctx.pick(["long.mp3", "speech.wav", "short.wav"], ["speech.wav", "short.wav"])
    pieces += [decoded(FIXTURES / name) for name in names]
    texts = [said, *((FIXTURES / name).with_suffix(".txt").read_text().strip() for name in names)]
    parts = [x for piece in pieces for x in (piece, silence(PAUSE_S))]
    return np.concatenate([*parts, silence(TAIL_S)]), " ".join(texts)


def looped(audio: np.ndarray, seconds: float) -> np.ndarray:
    """``audio`` repeated (small gaps of faint noise between) to ``seconds``, then silence."""
    return np.concatenate([*concatenated(audio, seconds, seed=5, gap=(PAUSE_S, PAUSE_S + 0.5)), silence(TAIL_S)])


async def stream(url: str, audio: bytes, offset_s: float = 0.0) -> Stream:
    """One session: ``audio`` (24 kHz PCM16) appended CHUNK_S at a time at
    real-time pace (on an absolute schedule, so sends do not drift), events
    read as they come; until every utterance heard has completed."""
    from openai import AsyncOpenAI

    out = Stream()
    step = int(RATE * CHUNK_S) * 2
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    await asyncio.sleep(offset_s)
    async with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]

        async def read() -> None:
            async for event in conn:
                now = time.perf_counter()
                item_id = getattr(event, "item_id", None)
                item = out.items.setdefault(item_id, Item()) if item_id else None
                if item is not None:
                    item.seen.append(event.type)
                if event.type == "input_audio_buffer.speech_started" and item:
                    item.started = now
                elif event.type == "input_audio_buffer.speech_stopped" and item:
                    item.stopped, item.end_ms = now, event.audio_end_ms
                elif event.type == DELTA and item:
                    item.first_delta = item.first_delta or now
                elif event.type == COMPLETED and item:
                    item.completed, item.transcript = now, event.transcript
                elif event.type == FAILED and item:
                    item.failed = str(event.error.message)  # type: ignore[union-attr]
                elif event.type == "error":
                    out.errors.append(str(event.error.message))  # type: ignore[union-attr]
                elif event.type == "whisper_mcp.lag":
                    out.lag_events.append(event.model_dump())

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(audio), step)):
            delay = t0 + k * CHUNK_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            out.sent_at.append(time.perf_counter())
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + step]).decode())
        deadline = time.monotonic() + SETTLE_S
        while (pending(out) or time.perf_counter() < t0 + len(out.sent_at) * CHUNK_S) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the reader takes the times; this only waits for it to be done
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if pending(out):
            out.errors.append(
                f"utterances still not completed {SETTLE_S:.0f} s after the audio ended: "
                + "; ".join(",".join(i.seen) for i in pending(out))
            )
    return out


def pending(out: Stream) -> list[Item]:
    """Utterances heard that have not completed (nor failed) yet."""
    return [i for i in out.items.values() if i.completed is None and i.failed is None]


def sessions(url: str, audio: bytes, n: int) -> list[Stream]:
    """``n`` sessions at once, each the same audio, started 0.3 s apart."""

    async def go() -> list[Stream]:
        return list(await asyncio.gather(*(stream(url, audio, 0.3 * i) for i in range(n))))

    return asyncio.run(go())


class BatchLoad(threading.Thread):
    """Batch jobs of ``wav`` one after another, the next sent as one ends, until stopped."""

    def __init__(self, url: str, wav: Path) -> None:
        super().__init__(daemon=True, name="batch-load")
        self.url, self.wav = url, wav
        self.current: str | None = None
        self.finished: list[str] = []  # the status each ended with
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=900) as client:
            while not self._halt.is_set():
                self.current = submit(client, self.wav)["job_id"]
                self.finished.append(str(wait_done(client, self.current, timeout=3600, poll=None).get("status")))

    def stop(self) -> None:
        self._halt.set()
        if self.current is not None:
            httpx.delete(f"{self.url}/jobs/{self.current}", timeout=30)
        self.join(120)


def thirds(lags: list[tuple[float, float]]) -> tuple[float, float]:
    """The median lag of the first and of the last third of a stream's utterances."""
    n = max(1, len(lags) // 3)
    first, last = [x for _, x in lags[:n]], [x for _, x in lags[-n:]]
    return float(np.median(first)), float(np.median(last))


def run(ctx: Ctx, sec: Section) -> None:
    speech, said = utterances(ctx)
    audio = pcm24k(speech)
    audio_s = len(speech) / SAMPLE_RATE
    # Concurrent runs stream the first part of it; the long run loops it.
    short = pcm24k(np.concatenate([speech[: int(ctx.pick(120.0, 45.0) * SAMPLE_RATE)], silence(TAIL_S)]))
    long_s = ctx.pick(600.0, 120.0)
    long_audio = pcm24k(looped(speech, long_s))
    wav = ctx.workdir / "utterances.wav"
    write_wav(wav, [speech])
    batch_wav = ctx.workdir / "batch_long.wav"
    write_wav(batch_wav, concatenated(decoded(FIXTURES / "long.mp3"), ctx.pick(600.0, 300.0), seed=9))
    runs: dict[str, list[Stream]] = {}
    with serving(ctx, "--max-realtime-sessions", "8") as srv, httpx.Client(base_url=srv.url, timeout=900) as client:
        batch = completed(wait_done(client, submit(client, wav)["job_id"], poll=None))  # loads the model too
        batch_text = client.get(f"/download/{batch['job_id']}").text
        runs["1 session"] = [asyncio.run(stream(srv.url, audio))]
        print(f"   1 session: {len(runs['1 session'][0].done())} utterances", flush=True)
        for n in (2, 4):
            runs[f"{n} sessions"] = sessions(srv.url, short, n)
            print(f"   {n} sessions done", flush=True)
        load = BatchLoad(srv.url, batch_wav)
        load.start()
        try:
            runs["2 sessions + batch job"] = sessions(srv.url, short, 2)
        finally:
            load.stop()
        print("   2 sessions beside a batch job done", flush=True)
        runs["long stream"] = [asyncio.run(stream(srv.url, long_audio))]
        print("   long stream done", flush=True)

    single = runs["1 session"][0]
    stops = single.after_stop()
    firsts = single.to_first_delta()
    p50 = pct(stops, 50)
    sec.add("1 session: speech_stopped -> completed, p50", p50, "s", "", None, None, "", "<= 0.6 s", p50 <= 0.6)
    sec.add("1 session: speech_stopped -> completed, p95", pct(stops, 95), "s", "", None, None, "", "", None)
    f50 = pct(firsts, 50) if firsts else float("nan")
    sec.add("1 session: speech_started -> first delta, p50", f50, "s", "", None, None, "", "<= 1.5 s", f50 <= 1.5)
    if firsts:
        sec.add("1 session: speech_started -> first delta, p95", pct(firsts, 95), "s", "", None, None, "", "", None)
    for label in ("2 sessions", "4 sessions", "2 sessions + batch job"):
        streams = runs[label]
        after = [x for s in streams for x in s.after_stop()]
        first = [x for s in streams for x in s.to_first_delta()]
        for name, xs, base in (
            ("speech_stopped -> completed", after, p50),
            ("speech_started -> first delta", first, f50),
        ):
            if xs:
                x = pct(xs, 50)
                sec.add(f"{label}: {name}, p50", x, "s", "1 session", base, x / base, "value/1 session", "", None)
                sec.add(f"{label}: {name}, p95", pct(xs, 95), "s", "", None, None, "", "", None)
    beside = runs["2 sessions + batch job"]
    grows = [thirds(s.lag()) for s in beside if len(s.lag()) >= 3]
    if grows:
        start, end = max(a for a, _ in grows), max(b for _, b in grows)
        ratio = end / start
        sec.add(
            "2 sessions + batch job: lag, last third of the stream", end, "s", "first third", start, ratio,
            "end/start", "<= 1.5x", ratio <= 1.5,
        )  # fmt: skip
    lags = runs["long stream"][0].lag()
    if len(lags) >= 3:
        start, end = thirds(lags)
        ratio = end / start
        sec.add(
            f"{long_s / 60:.0f}-min stream: lag, last third", end, "s", "first third", start, ratio, "end/start",
            "<= 1.5x", ratio <= 1.5,
        )  # fmt: skip
    live_wer, batch_wer = 100.0 * wer([(said, single.text())]), 100.0 * wer([(said, batch_text)])
    sec.add(
        "live WER (completed utterances joined)", live_wer, "%", "batch", batch_wer, live_wer / batch_wer,
        "live/batch", "<= batch + 3 points", live_wer <= batch_wer + 3.0,
    )  # fmt: skip
    sec.notes.append(
        "audio %.0f s (%d utterances heard in 1 session), concurrent runs %.0f s each, long stream %.0f s; "
        "lag = completed - when the utterance's last audio was sent; batch jobs beside 2 sessions: %s"
        % (audio_s, len(single.done()), len(short) / 2 / RATE, long_s, ", ".join(load.finished))
    )
    errors = [e for streams in runs.values() for s in streams for e in s.errors]
    lag_events = sum(len(s.lag_events) for streams in runs.values() for s in streams)
    sec.notes.append(f"whisper_mcp.lag events: {lag_events}; errors: {len(errors)} {errors[:3]}")
    sec.details.update(
        audio_s=audio_s,
        runs={
            label: [
                {"after_stop": s.after_stop(), "first_delta": s.to_first_delta(), "lag": s.lag(),
                 "lag_events": s.lag_events, "errors": s.errors}
                for s in streams
            ]
            for label, streams in runs.items()
        },
        live_text=single.text(),
        batch_text=batch_text,
    )  # fmt: skip


__all__ = ["run"]
