"""Batching of short queued jobs: several clips in one forward pass (openai
engine), in process, with the real models and real audio: a batch gives what
one-by-one gives. Which queued jobs the service batches together:
tests/unit/test_service_batching.py (over a fake engine)."""

from __future__ import annotations

import pytest

from whisper_mcp.config import default_model_cache
from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.errors import InvalidAudio
from whisper_mcp.models.convert import find_packaged_models
from whisper_mcp.models.registry import ModelRegistry
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.transcriber import Transcriber

from helpers import FIXTURES, batched, long_audio_slices, words

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine() -> Transcriber:
    return Transcriber(ModelRegistry(default_model_cache(), engine="openai"), "cpu")


@pytest.mark.parametrize(
    "options",
    [TranscribeOptions(), TranscribeOptions(initial_prompt="Weekly planning meeting.", word_timestamps=True)],
    ids=["default", "prompt-words"],
)
def test_batch_gives_what_one_by_one_gives(engine: Transcriber, options: TranscribeOptions) -> None:
    clips = [decode_audio(FIXTURES / "speech.wav"), decode_audio(FIXTURES / "short.wav")]
    if not options.word_timestamps:  # word timing costs seconds per clip on CPU; two clips show it
        clips += long_audio_slices(2, seed=3)
    info = engine.registry.resolve("tiny.en")
    alone = [engine.transcribe(clip, info, options) for clip in clips]
    outcomes, hits = batched(engine, [BatchItem(clip) for clip in clips], options)
    # Every clip's first (only) window came from the one batched decode, which
    # proves the batch asked exactly what transcribe() asks ...
    assert hits == len(clips)
    # ... and the transcripts are those of the clips transcribed alone.
    assert all(isinstance(o, Transcription) for o in outcomes), outcomes
    assert [o.text for o in outcomes] == [a.text for a in alone]
    assert [len(o.segments) for o in outcomes] == [len(a.segments) for a in alone]
    assert {"meeting", "friday"} <= words(outcomes[0].text) and {"hello", "world"} <= words(outcomes[1].text)
    if options.word_timestamps:
        assert all(s.words for o in outcomes for s in o.segments)


def test_one_bad_or_cancelled_job_leaves_the_rest(engine: Transcriber) -> None:
    class Stop(Exception):
        pass

    def stop(fraction: float) -> None:
        raise Stop

    progress: list[float] = []
    items = [
        BatchItem(FIXTURES / "speech.wav", 9.0, progress.append),
        BatchItem(FIXTURES / "not_audio.bin", 1.0),
        BatchItem(FIXTURES / "short.wav", 2.0, stop),
        BatchItem(FIXTURES / "short.wav", 2.0),
    ]
    outcomes, hits = batched(engine, items, TranscribeOptions())
    assert isinstance(outcomes[0], Transcription) and {"meeting", "friday"} <= words(outcomes[0].text)
    assert progress and progress[-1] == 1.0
    assert isinstance(outcomes[1], InvalidAudio) and "not a recognised audio format" in outcomes[1].message
    assert isinstance(outcomes[2], Stop)
    assert isinstance(outcomes[3], Transcription) and {"hello", "world"} <= words(outcomes[3].text)
    # The two that decoded took their window from the shared forward pass; the
    # cancelled one stopped as its window started, before taking its decode.
    assert hits == 2


def test_languages_detected_per_clip_in_one_batch(engine: Transcriber) -> None:
    if "base" not in find_packaged_models():
        pytest.skip("packaged model base not installed")
    items = [
        BatchItem(FIXTURES / "spanish.wav"),
        BatchItem(FIXTURES / "speech.wav"),
        BatchItem(FIXTURES / "spanish.wav"),
    ]
    outcomes, hits = batched(engine, items, TranscribeOptions(), "base")
    assert hits == 3
    spanish, english, again = outcomes
    assert isinstance(spanish, Transcription) and isinstance(english, Transcription)
    assert spanish.language == "es" and english.language == "en"
    assert spanish.language_probability is not None and spanish.language_probability > 0.5
    assert {"buenos", "gracias"} <= words(spanish.text) and {"transcription", "friday"} <= words(english.text)
    assert again.text == spanish.text  # type: ignore[union-attr]
    alone = engine.transcribe(FIXTURES / "speech.wav", engine.registry.resolve("base"), TranscribeOptions())
    assert english.text == alone.text and english.language_probability == alone.language_probability


def test_beam_search_jobs_run_one_by_one(engine: Transcriber) -> None:
    options = TranscribeOptions(beam_size=2)
    clips = [decode_audio(FIXTURES / "short.wav"), decode_audio(FIXTURES / "speech.wav")]
    info = engine.registry.resolve("tiny.en")
    alone = [engine.transcribe(clip, info, options).text for clip in clips]
    outcomes, hits = batched(engine, [BatchItem(clip) for clip in clips], options)
    assert hits == 0 and [o.text for o in outcomes] == alone


def test_only_short_greedy_jobs_batch(engine: Transcriber) -> None:
    greedy = TranscribeOptions()
    assert engine.can_batch(9.0, greedy) and engine.can_batch(30.0, greedy)
    assert engine.can_batch(9.0, TranscribeOptions(beam_size=1, language="en", temperature=0.2))
    assert not engine.can_batch(30.5, greedy) and not engine.can_batch(0.0, greedy)
    assert not engine.can_batch(9.0, TranscribeOptions(beam_size=2))
