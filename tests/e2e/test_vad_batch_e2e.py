"""vad_filter on both engines, hotwords, and batching of short jobs on the
ctranslate2 engine, with the real tiny.en model and real audio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from whisper_mcp.config import Settings, default_model_cache
from whisper_mcp.engines.audio import SAMPLE_RATE, decode_audio
from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.errors import InvalidAudio
from whisper_mcp.models.registry import ModelRegistry
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.server.app import build_engine
from whisper_mcp.transcriber import Transcriber

from helpers import FIXTURES, InProcessServer, batched, long_audio_slices, submit, wait_done, words

pytestmark = pytest.mark.e2e

_engines: dict[str, Transcriber] = {}


def engine_for(name: str) -> Transcriber:
    """One engine per kind for the module: the model loads once."""
    if name not in _engines:
        _engines[name] = Transcriber(ModelRegistry(default_model_cache(), engine=name), "cpu", engine=name)
    return _engines[name]


def transcribe(engine: str, audio: np.ndarray, **options: object) -> tuple[Transcription, list[float]]:
    e = engine_for(engine)
    progress: list[float] = []
    result = e.transcribe(audio, e.registry.resolve("tiny.en"), TranscribeOptions(**options), progress.append)
    return result, progress


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def hiss(seconds: float) -> np.ndarray:
    return (np.random.default_rng(11).standard_normal(int(seconds * SAMPLE_RATE)) * 0.003).astype(np.float32)


# -- vad_filter ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["ctranslate2", "openai"])
@pytest.mark.parametrize("noise", ["silence", "hiss"])
def test_vad_filter_gives_nothing_for_silence_and_noise(engine: str, noise: str) -> None:
    audio = silence(40.0) if noise == "silence" else hiss(40.0)
    result, progress = transcribe(engine, audio, vad_filter=True)
    assert result.text == "" and result.segments == []
    assert result.duration == 40.0
    assert progress and progress[-1] == 1.0


def test_without_vad_filter_silence_is_hallucinated() -> None:
    # What vad_filter is for: tiny.en hears words in 40 s of digital silence or faint hiss.
    texts = [transcribe("ctranslate2", audio)[0].text for audio in (silence(40.0), hiss(40.0))]
    assert any(texts), texts


@pytest.mark.parametrize("engine", ["ctranslate2", "openai"])
def test_vad_filter_keeps_the_words_and_the_recordings_timeline(engine: str) -> None:
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


# -- batching on the ctranslate2 engine ------------------------------------------------


@pytest.fixture(scope="module")
def ct2() -> Iterator[Transcriber]:
    yield engine_for("ctranslate2")


@pytest.mark.parametrize(
    "options",
    [
        TranscribeOptions(),
        TranscribeOptions(initial_prompt="Weekly planning meeting.", hotwords="Friday", word_timestamps=True),
        TranscribeOptions(vad_filter=True),
        TranscribeOptions(beam_size=1),
    ],
    ids=["default-beam-2", "prompt-hotwords-words", "vad", "greedy"],
)
def test_ct2_batch_gives_what_one_by_one_gives(ct2: Transcriber, options: TranscribeOptions) -> None:
    clips = [decode_audio(FIXTURES / "speech.wav"), decode_audio(FIXTURES / "short.wav")]
    if not options.word_timestamps:
        clips += long_audio_slices(3, seed=3)
    info = ct2.registry.resolve("tiny.en")
    alone = [ct2.transcribe(clip, info, options) for clip in clips]
    outcomes, hits = batched(ct2, [BatchItem(clip) for clip in clips], options)
    # Every clip's first window came from the one batched encode and generate:
    # the batch asked exactly what faster-whisper's transcribe() asks ...
    assert hits == len(clips)
    # ... and each job got the transcript it gets alone.
    assert all(isinstance(o, Transcription) for o in outcomes), outcomes
    assert [o.text for o in outcomes] == [a.text for a in alone]
    assert [[(s.start, s.end) for s in o.segments] for o in outcomes] == [
        [(s.start, s.end) for s in a.segments] for a in alone
    ]
    assert {"meeting", "friday"} <= words(outcomes[0].text) and {"hello", "world"} <= words(outcomes[1].text)
    if options.word_timestamps:
        assert all(s.words for o in outcomes for s in o.segments)


def test_ct2_batch_one_bad_or_cancelled_job_leaves_the_rest(ct2: Transcriber) -> None:
    class Stop(Exception):
        pass

    def stop(fraction: float) -> None:
        raise Stop

    progress: list[float] = []
    items = [
        BatchItem(FIXTURES / "speech.wav", 9.0, progress.append),
        BatchItem(FIXTURES / "not_audio.bin", 1.0),
        BatchItem(FIXTURES / "short.wav", 2.0, stop),
        BatchItem(silence(10.0), 10.0),
        BatchItem(FIXTURES / "short.wav", 2.0),
    ]
    outcomes, hits = batched(ct2, items, TranscribeOptions(vad_filter=True))
    assert isinstance(outcomes[0], Transcription) and {"meeting", "friday"} <= words(outcomes[0].text)
    assert progress and progress[-1] == 1.0
    assert isinstance(outcomes[1], InvalidAudio)
    assert isinstance(outcomes[2], Stop)
    assert isinstance(outcomes[3], Transcription) and outcomes[3].text == ""  # VAD left nothing to decode
    assert isinstance(outcomes[4], Transcription) and {"hello", "world"} <= words(outcomes[4].text)
    assert hits == 2  # speech and the last short clip; the cancelled one stopped before its decode


def test_ct2_engine_batches_short_jobs_beam_search_too(ct2: Transcriber) -> None:
    # CTranslate2 searches each batch item's beams apart; the default is a beam of 2.
    assert ct2.default_beam_size == 2
    assert ct2.can_batch(9.0, TranscribeOptions()) and ct2.can_batch(9.0, TranscribeOptions(vad_filter=True))
    assert ct2.can_batch(9.0, TranscribeOptions(beam_size=3)) and ct2.can_batch(9.0, TranscribeOptions(beam_size=1))
    assert not ct2.can_batch(31.0, TranscribeOptions())
