"""Batching of short queued jobs: several clips in one forward pass, on both
engines (openai and ctranslate2), in process, with the real models and real
audio: a batch gives what one-by-one gives. Which queued jobs the service
batches together: tests/unit/test_service_batching.py (over a fake engine)."""

from __future__ import annotations

import pytest

from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.errors import InvalidAudio
from whisper_mcp.models.convert import find_packaged_models
from whisper_mcp.options import TranscribeOptions

from helpers import FIXTURES, Engines, batched, long_audio_slices, silence, words

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("name", "options"),
    [
        pytest.param("openai", TranscribeOptions(), id="openai-default"),
        pytest.param(
            "openai",
            TranscribeOptions(initial_prompt="Weekly planning meeting.", word_timestamps=True),
            id="openai-prompt-words",
        ),
        pytest.param("ctranslate2", TranscribeOptions(), id="ctranslate2-default-beam-2"),
        pytest.param(
            "ctranslate2",
            TranscribeOptions(initial_prompt="Weekly planning meeting.", hotwords="Friday", word_timestamps=True),
            id="ctranslate2-prompt-hotwords-words",
        ),
        pytest.param("ctranslate2", TranscribeOptions(vad_filter=True), id="ctranslate2-vad"),
        pytest.param("ctranslate2", TranscribeOptions(beam_size=1), id="ctranslate2-greedy"),
    ],
)
def test_batch_gives_what_one_by_one_gives(engines: Engines, name: str, options: TranscribeOptions) -> None:
    engine = engines(name)
    clips = [decode_audio(FIXTURES / "speech.wav"), decode_audio(FIXTURES / "short.wav")]
    if not options.word_timestamps:  # word timing costs seconds a clip on CPU: two clips are enough there
        clips += long_audio_slices(1, seed=3)  # a piece of long.mp3 cut mid-word
    info = engine.registry.resolve("tiny.en")
    alone = [engine.transcribe(clip, info, options) for clip in clips]
    outcomes, hits = batched(engine, [BatchItem(clip) for clip in clips], options)
    # Every clip's first window came from the one batched decode (on
    # ctranslate2, the one batched encode and generate), which proves the
    # batch asked exactly what transcribe() asks ...
    assert hits == len(clips)
    # ... and each job got the transcript it gets alone.
    assert all(isinstance(o, Transcription) for o in outcomes), outcomes
    assert [o.text for o in outcomes] == [a.text for a in alone]
    assert [len(o.segments) for o in outcomes] == [len(a.segments) for a in alone]
    if name == "ctranslate2":
        assert [[(s.start, s.end) for s in o.segments] for o in outcomes] == [
            [(s.start, s.end) for s in a.segments] for a in alone
        ]
    assert {"meeting", "friday"} <= words(outcomes[0].text) and {"hello", "world"} <= words(outcomes[1].text)
    if options.word_timestamps:
        assert all(s.words for o in outcomes for s in o.segments)


@pytest.mark.parametrize(
    ("name", "options"),
    [("openai", TranscribeOptions()), ("ctranslate2", TranscribeOptions(vad_filter=True))],
    ids=["openai", "ctranslate2-vad"],
)
def test_one_bad_or_cancelled_job_leaves_the_rest(engines: Engines, name: str, options: TranscribeOptions) -> None:
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
    if options.vad_filter:
        items.insert(3, BatchItem(silence(10.0), 10.0))
    outcomes, hits = batched(engines(name), items, options)
    assert isinstance(outcomes[0], Transcription) and {"meeting", "friday"} <= words(outcomes[0].text)
    assert progress and progress[-1] == 1.0
    assert isinstance(outcomes[1], InvalidAudio) and "not a recognised audio format" in outcomes[1].message
    assert isinstance(outcomes[2], Stop)
    if options.vad_filter:
        assert isinstance(outcomes[3], Transcription) and outcomes[3].text == ""  # VAD left nothing to decode
    assert isinstance(outcomes[-1], Transcription) and {"hello", "world"} <= words(outcomes[-1].text)
    # The two that decoded took their window from the shared forward pass; the
    # cancelled one stopped as its window started, before taking its decode.
    assert hits == 2


def test_languages_detected_per_clip_in_one_batch(engines: Engines) -> None:
    if "base" not in find_packaged_models():
        pytest.skip("packaged model base not installed")
    engine = engines("openai")
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


def test_beam_search_jobs_run_one_by_one_on_openai(engines: Engines) -> None:
    engine = engines("openai")
    options = TranscribeOptions(beam_size=2)
    clips = [decode_audio(FIXTURES / "short.wav"), decode_audio(FIXTURES / "speech.wav")]
    info = engine.registry.resolve("tiny.en")
    alone = [engine.transcribe(clip, info, options).text for clip in clips]
    outcomes, hits = batched(engine, [BatchItem(clip) for clip in clips], options)
    assert hits == 0 and [o.text for o in outcomes] == alone


# Which jobs each engine batches: (audio seconds, options, batched). CTranslate2
# searches each batch item's beams apart, so beam-search jobs batch there too.
CAN_BATCH = {
    "openai": [
        (9.0, TranscribeOptions(), True),
        (30.0, TranscribeOptions(), True),
        (9.0, TranscribeOptions(beam_size=1, language="en", temperature=0.2), True),
        (30.5, TranscribeOptions(), False),
        (0.0, TranscribeOptions(), False),
        (9.0, TranscribeOptions(beam_size=2), False),
    ],
    "ctranslate2": [
        (9.0, TranscribeOptions(), True),
        (9.0, TranscribeOptions(vad_filter=True), True),
        (9.0, TranscribeOptions(beam_size=3), True),
        (9.0, TranscribeOptions(beam_size=1), True),
        (31.0, TranscribeOptions(), False),
    ],
}
DEFAULT_BEAM = {"openai": 1, "ctranslate2": 2}  # 1: greedy


@pytest.mark.parametrize("name", ["openai", "ctranslate2"])
def test_which_jobs_batch(engines: Engines, name: str) -> None:
    engine = engines(name)
    assert engine.default_beam_size == DEFAULT_BEAM[name]
    assert [engine.can_batch(seconds, options) for seconds, options, _ in CAN_BATCH[name]] == [
        batches for _, _, batches in CAN_BATCH[name]
    ]
