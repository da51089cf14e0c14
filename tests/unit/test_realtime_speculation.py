"""A live utterance's last decode starts in the pause that may end it
(``RealtimeSession._speculate``): by the time server VAD declares the end,
its transcript is ready, and speech that resumes within the pause is never
cut off. The session runs against a stand-in for the shared model whose
"transcript" is the number of samples it decoded, and a voice detector that
hears any loud frame as speech."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import anyio
import numpy as np
import pytest

from whisper_mcp.engines.base import Transcription
from whisper_mcp.engines.vad import FRAME
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.realtime.session import RealtimeSession

pytestmark = pytest.mark.anyio

RATE = 24000  # the session's default input: PCM16 at 24 kHz
CHUNK = RATE // 10  # 100 ms appends, as clients send them


class LoudFrames:
    """A voice detector: a 32 ms frame is speech when it is loud."""

    def __init__(self) -> None:
        self._rest = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._rest = np.concatenate([self._rest, samples])
        frames = len(self._rest) // FRAME
        loud = [float(np.abs(self._rest[i * FRAME : (i + 1) * FRAME]).mean() > 0.01) for i in range(frames)]
        self._rest = self._rest[frames * FRAME :]
        return np.array(loud, np.float32)


class CountingModel:
    """Stands in for ``LiveTranscription``; logs each decode beside the events sent."""

    def __init__(self, log: list[tuple[str, Any]], delay: float = 0.0) -> None:
        self.log = log
        self.delay = delay
        self.quick: list[bool] = []  # per decode: asked for the engine's quick guess
        self.metrics = Metrics()
        self.request_made = SimpleNamespace(model="tiny.en", options=SimpleNamespace(reroute=False))

    def request(self, *args: object) -> Any:
        return self.request_made

    async def decode(
        self, samples: np.ndarray, request: Any, *, partial: bool = False, quick: bool = False
    ) -> Transcription:
        self.log.append(("partial" if partial else "last", len(samples)))
        self.quick.append(quick)
        await anyio.sleep(self.delay)
        return Transcription(text=str(len(samples)), language="en", duration=len(samples) / 16000)

    def detector(self) -> LoudFrames:
        return LoudFrames()

    async def speech(self, detector: LoudFrames, samples: np.ndarray) -> np.ndarray:
        return detector.push(samples)

    async def keep(self, *args: object) -> None:
        raise AssertionError("not kept")


def pcm(seconds: float, loud: bool) -> bytes:
    n = int(seconds * RATE)
    rng = np.random.default_rng(0)
    samples = rng.integers(-8000, 8000, n) if loud else np.zeros(n)
    return samples.astype("<i2").tobytes()


async def stream(session: RealtimeSession, *parts: tuple[float, bool], pause: float = 0.005) -> None:
    """Send ``parts`` in 100 ms appends, ``pause`` seconds apart (0.1: at the pace of speech)."""
    data = b"".join(pcm(seconds, loud) for seconds, loud in parts)
    for i in range(0, len(data), CHUNK * 2):
        chunk = base64.b64encode(data[i : i + CHUNK * 2]).decode()
        await session.handle(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await anyio.sleep(pause)  # the decode task runs between appends, as between a client's messages


async def session_with(
    log: list[tuple[str, Any]], delay: float = 0.0, model: type[CountingModel] = CountingModel
) -> RealtimeSession:
    async def send(event: dict[str, Any]) -> None:
        log.append((event["type"], event))

    session = RealtimeSession(model(log, delay), send, keep=False)  # type: ignore[arg-type]
    await session.start()
    return session


def committed_samples(log: list[tuple[str, Any]]) -> int:
    started = next(e for kind, e in log if kind == "input_audio_buffer.speech_started")
    stopped = next(e for kind, e in log if kind == "input_audio_buffer.speech_stopped")
    return (stopped["audio_end_ms"] - started["audio_start_ms"]) * 16


async def test_the_last_decode_starts_in_the_pause_and_completes_the_utterance() -> None:
    log: list[tuple[str, Any]] = []
    session = await session_with(log)
    await stream(session, (0.5, False), (1.2, True), (0.8, False))
    with anyio.fail_after(5):
        while not any(kind.endswith(".completed") for kind, _ in log):
            await anyio.sleep(0.01)
    await session.close()
    kinds = [kind for kind, _ in log]
    lasts = [i for i, (kind, _) in enumerate(log) if kind == "last"]
    # One last decode, begun before the end was declared, of exactly the committed audio.
    assert len(lasts) == 1 and lasts[0] < kinds.index("input_audio_buffer.speech_stopped")
    assert log[lasts[0]][1] == committed_samples(log)
    completed = next(e for kind, e in log if kind.endswith(".completed"))
    assert completed["transcript"] == str(committed_samples(log))
    # No decode of the growing utterance after the pause began: its last decode covers it.
    assert all(kind != "partial" for kind, _ in log[lasts[0] :])


async def test_speech_that_resumes_in_the_pause_is_decoded_whole() -> None:
    log: list[tuple[str, Any]] = []
    session = await session_with(log, delay=0.05)
    await stream(session, (0.5, False), (1.0, True), (0.3, False), (0.6, True), (0.8, False))
    with anyio.fail_after(5):
        while not any(kind.endswith(".completed") for kind, _ in log):
            await anyio.sleep(0.01)
    await session.close()
    kinds = [kind for kind, _ in log]
    assert kinds.count("input_audio_buffer.speech_stopped") == 1  # one utterance across the short pause
    lasts = [samples for kind, samples in log if kind == "last"]
    assert len(lasts) == 2  # the short pause's, given up, and the end's
    completed = next(e for kind, e in log if kind.endswith(".completed"))
    assert completed["transcript"] == str(committed_samples(log)) == str(lasts[-1])


async def test_a_manual_commit_in_a_pause_decodes_what_it_commits() -> None:
    log: list[tuple[str, Any]] = []
    session = await session_with(log)
    await stream(session, (0.5, False), (1.0, True), (0.3, False))
    await session.handle(json.dumps({"type": "input_audio_buffer.commit"}))
    with anyio.fail_after(5):
        while not any(kind.endswith(".completed") for kind, _ in log):
            await anyio.sleep(0.01)
    await session.close()
    completed = next(e for kind, e in log if kind.endswith(".completed"))
    lasts = [samples for kind, samples in log if kind == "last"]
    # The pause's decode ended where the silence began; the commit took the silence too.
    assert len(lasts) == 2 and lasts[-1] > lasts[0]
    assert completed["transcript"] == str(lasts[-1])


async def test_speech_that_goes_on_is_cut_at_its_first_pause_past_the_split_length() -> None:
    log: list[tuple[str, Any]] = []
    session = await session_with(log)
    # 0.2 s of silence before 26 s of speech, a 0.3 s pause (too short to end a turn), 1 s more.
    await stream(session, (0.2, False), (26.0, True), (0.3, False), (1.0, True), (0.8, False))
    with anyio.fail_after(10):
        while sum(kind.endswith(".completed") for kind, _ in log) < 2:
            await anyio.sleep(0.01)
    await session.close()
    started = [e for kind, e in log if kind == "input_audio_buffer.speech_started"]
    stopped = [e for kind, e in log if kind == "input_audio_buffer.speech_stopped"]
    assert len(started) == len(stopped) == 2
    # The first item ends where the pause began, not in a word; the next
    # starts there (its padding reaches back into the pause), nothing twice.
    assert 26200 <= stopped[0]["audio_end_ms"] <= 26300
    assert started[1]["audio_start_ms"] == stopped[0]["audio_end_ms"]
    assert started[1]["item_id"] != started[0]["item_id"]


class SteadyModel(CountingModel):
    """Hears the same words in every decode: two in a row agree at once."""

    async def decode(
        self, samples: np.ndarray, request: Any, *, partial: bool = False, quick: bool = False
    ) -> Transcription:
        await super().decode(samples, request, partial=partial, quick=quick)
        return Transcription(text="alpha beta gamma", language="en", duration=len(samples) / 16000)


async def test_decodes_follow_each_other_until_the_first_words_then_keep_the_model_half_free() -> None:
    log: list[tuple[str, Any]] = []
    session = await session_with(log, delay=0.3, model=SteadyModel)
    await stream(session, (3.0, True), pause=0.1)
    await session.close()
    kinds = [kind for kind, _ in log]
    first_delta = kinds.index("conversation.item.input_audio_transcription.delta")
    before = [n for kind, n in log[:first_delta] if kind == "partial"]
    after = [n for kind, n in log[first_delta:] if kind == "partial"]
    assert len(before) >= 2 and len(after) >= 2
    # Before the first words: the next decode as soon as 0.3 s of audio came
    # (the decode's cost), and the first words from the first decode 0.6 s
    # of audio after another; after: twice the cost, 0.6 s.
    assert all(b - a < 0.5 * 16000 for a, b in zip(before, before[1:], strict=False))
    assert before[-1] - before[0] >= 0.6 * 16000 > before[-2] - before[0]
    # The engine's quick guesses until the first words; then decodes of the window.
    quick = session._live.quick  # type: ignore[attr-defined]
    partials = [kind for kind, _ in log if kind in ("partial", "last")]
    assert [q for q, kind in zip(quick, partials, strict=True) if kind == "partial"] == [True] * len(before) + [
        False
    ] * len(after)
    assert all(b - a >= 0.6 * 16000 for a, b in zip(after, after[1:], strict=False))
