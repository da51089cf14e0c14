"""vad_filter on both engines and hotwords, with the real tiny.en model and
real audio. Batching with both: tests/e2e/test_batch_e2e.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from whisper_mcp.config import Settings
from whisper_mcp.engines.audio import SAMPLE_RATE, decode_audio
from whisper_mcp.engines.base import Transcription
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.server.app import build_engine

from helpers import FIXTURES, Engines, InProcessServer, silence, submit, wait_done, words

pytestmark = pytest.mark.e2e

Transcribe = Callable[..., tuple[Transcription, list[float]]]


@pytest.fixture(scope="module")
def transcribe(engines: Engines) -> Transcribe:
    """``transcribe(engine, audio, **options)``: the transcription and its progress."""

    def run(engine: str, audio: np.ndarray, **options: object) -> tuple[Transcription, list[float]]:
        e = engines(engine)
        progress: list[float] = []
        result = e.transcribe(audio, e.registry.resolve("tiny.en"), TranscribeOptions(**options), progress.append)
        return result, progress

    return run


def hiss(seconds: float) -> np.ndarray:
    return (np.random.default_rng(11).standard_normal(int(seconds * SAMPLE_RATE)) * 0.003).astype(np.float32)


# -- vad_filter ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["ctranslate2", "openai"])
@pytest.mark.parametrize("noise", ["silence", "hiss"])
def test_vad_filter_gives_nothing_for_silence_and_noise(transcribe: Transcribe, engine: str, noise: str) -> None:
    audio = silence(40.0) if noise == "silence" else hiss(40.0)
    result, progress = transcribe(engine, audio, vad_filter=True)
    assert result.text == "" and result.segments == []
    assert result.duration == 40.0
    assert progress and progress[-1] == 1.0


def test_without_vad_filter_silence_is_hallucinated(transcribe: Transcribe) -> None:
    # What vad_filter is for: tiny.en hears words in 40 s of digital silence or faint hiss.
    texts = [transcribe("ctranslate2", audio)[0].text for audio in (silence(40.0), hiss(40.0))]
    assert any(texts), texts


@pytest.mark.parametrize("engine", ["ctranslate2", "openai"])
def test_vad_filter_keeps_the_words_and_the_recordings_timeline(transcribe: Transcribe, engine: str) -> None:
    speech = decode_audio(FIXTURES / "speech.wav")
    lead = 12.0  # more than VAD's padding and its 2 s minimum silence
    audio = np.concatenate([silence(lead), speech, silence(6.0)])
    alone, _ = transcribe(engine, speech)
    result, progress = transcribe(engine, audio, vad_filter=True, word_timestamps=True)
    # tiny.en may hear a word or two differently once the clip starts elsewhere.
    assert {"report", "friday", "morning", "loaded"} <= words(result.text)
    assert len(words(result.text) & words(alone.text)) >= 0.7 * len(words(alone.text))
    assert result.duration == round(len(audio) / SAMPLE_RATE, 3)
    assert progress[-1] == 1.0
    # Times count from the start of the recording, silence included: shifted
    # by the lead, as the same speech alone is timed.
    assert result.segments[0].start == pytest.approx(lead + alone.segments[0].start, abs=1.0)
    assert result.segments[-1].end == pytest.approx(lead + alone.segments[-1].end, abs=1.0)
    first_words = [w for s in result.segments for w in s.words or []]
    assert first_words and lead - 0.5 <= first_words[0].start <= lead + 2.0
    assert all(lead - 0.5 <= s.start <= s.end <= lead + len(speech) / SAMPLE_RATE + 1.0 for s in result.segments)


# -- hotwords ----------------------------------------------------------------------


def test_hotwords_accepted_on_ctranslate2_and_refused_on_openai(tmp_path: Path) -> None:
    ct2 = build_engine(Settings.from_env({}, engine="ctranslate2"))
    with (
        InProcessServer.start(tmp_path / "ct2", ct2) as srv,  # type: ignore[arg-type]
        httpx.Client(base_url=srv.url, timeout=120) as client,
    ):
        job = submit(client, FIXTURES / "speech.wav", hotwords="Friday transcription", vad_filter="true")
        record = wait_done(client, job["job_id"])
        assert record["status"] == "completed", record
        assert record["options"]["hotwords"] == "Friday transcription"
        assert {"meeting", "friday", "transcription"} <= words(record["transcript"])
    openai = build_engine(Settings.from_env({}, engine="openai"))
    with (
        InProcessServer.start(tmp_path / "openai", openai) as srv,  # type: ignore[arg-type]
        httpx.Client(base_url=srv.url, timeout=120) as client,
    ):
        with open(FIXTURES / "speech.wav", "rb") as f:
            response = client.post("/transcribe", files={"file": ("speech.wav", f)}, data={"hotwords": "Friday"})
        assert response.status_code == 400, response.text
        assert "engine 'openai'" in response.json()["error"]["message"]
        assert client.get("/jobs").json()["total"] == 0
