"""The OpenAI-compatible endpoints, driven by the official ``openai`` SDK
against the real server and the real models: what they hear, in each response
format, and that what they answer matches OpenAI's published schemas. Errors,
models, options and hang-ups are tested in process over a fake engine in
tests/unit/test_openai_api.py and tests/unit/test_openai_schema.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from helpers import FIXTURES, ServerProcess, words
from openai_schema import check, check_stream, stream_events

pytestmark = pytest.mark.e2e

SPEECH = FIXTURES / "speech.wav"
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[OpenAI]:
    # max_retries=0: a server error must show up here, not be retried away.
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_transcription_json(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(model="whisper-1", file=f)
    assert SPEECH_WORDS <= words(result.text), result.text


def test_transcription_text_srt_vtt(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f:
        text = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and SPEECH_WORDS <= words(text), text

    with open(SPEECH, "rb") as f:
        srt = api.audio.transcriptions.create(model="tiny.en", file=f, response_format="srt")
    cues = [block.split("\n") for block in srt.strip().split("\n\n")]
    assert cues, srt
    previous = 0.0
    for number, cue in enumerate(cues, start=1):
        assert cue[0] == str(number), srt
        match = re.fullmatch(f"({SRT_TIME}) --> ({SRT_TIME})", cue[1])
        assert match, cue
        start, end = seconds(match[1]), seconds(match[2])
        assert previous <= start <= end, srt
        previous = start
        assert cue[2].strip(), srt
    assert SPEECH_WORDS <= words(" ".join(" ".join(c[2:]) for c in cues))

    with open(SPEECH, "rb") as f:
        vtt = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n"), vtt
    assert re.search(f"^{VTT_TIME} --> {VTT_TIME}$", vtt, re.M), vtt
    assert "meeting" in vtt.lower()


def test_transcription_verbose_json_with_words_and_segments(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
            prompt="Friday report.",
        )
    assert result.task == "transcribe"
    assert result.language == "english"
    assert 5 < result.duration < 30
    assert SPEECH_WORDS <= words(result.text)

    segments, said = result.segments, result.words
    assert segments and said
    assert [s.id for s in segments] == list(range(len(segments)))
    for segment in segments:
        assert 0 <= segment.start <= segment.end <= result.duration + 0.5
        assert segment.text.strip() and segment.tokens and all(isinstance(t, int) for t in segment.tokens)
    assert " ".join(s.text.strip() for s in segments) == result.text.strip()

    assert [w.start for w in said] == sorted(w.start for w in said)
    for word in said:
        assert word.word == word.word.strip() and word.word
        assert 0 <= word.start <= word.end <= result.duration + 0.5
        # Every word lies within a segment.
        assert any(s.start - 0.05 <= word.start and word.end <= s.end + 0.05 for s in segments), word
    assert SPEECH_WORDS <= words(" ".join(w.word for w in said))


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_into_english(api: OpenAI) -> None:
    with open(FIXTURES / "spanish.wav", "rb") as f:
        result = api.audio.translations.create(model="base", file=f)
    assert {"good", "morning", "thank"} <= words(result.text), result.text

    with open(FIXTURES / "spanish.wav", "rb") as f:
        verbose = api.audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert verbose.task == "translate" and verbose.language == "english"
    assert verbose.text == result.text and verbose.segments


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_answers_match_openais_schemas(server: ServerProcess) -> None:
    """The real model's answers, streamed too, as OpenAI's schemas describe them."""
    asked = [
        ("transcriptions", SPEECH, {"model": "whisper-1"}, "CreateTranscriptionResponseJson"),
        (
            "transcriptions",
            SPEECH,
            {"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
            "CreateTranscriptionResponseVerboseJson",
        ),
        (
            "transcriptions",
            SPEECH,
            {"model": "whisper-1", "include[]": "logprobs"},
            "CreateTranscriptionResponseJson",
        ),
        ("translations", FIXTURES / "spanish.wav", {"model": "base"}, "CreateTranslationResponseJson"),
        (
            "translations",
            FIXTURES / "spanish.wav",
            {"model": "base", "response_format": "verbose_json"},
            "CreateTranslationResponseVerboseJson",
        ),
    ]
    with httpx.Client(base_url=f"{server.url}/v1", timeout=120) as client:
        for route, audio, fields, schema in asked:
            with open(audio, "rb") as f:
                response = client.post(f"/audio/{route}", data=fields, files={"file": (audio.name, f)})
            assert response.status_code == 200, response.text
            check(response.json(), schema)
            if "include[]" in fields:  # the real decoder's word probabilities, one entry per word
                logprobs = response.json()["logprobs"]
                assert len(logprobs) == len(response.json()["text"].split())
                assert all(-20 < e["logprob"] <= 0 for e in logprobs), logprobs
        with (
            open(SPEECH, "rb") as f,
            client.stream(
                "POST",
                "/audio/transcriptions",
                data={"model": "whisper-1", "stream": "true", "prompt": "A schema check.", "include[]": "logprobs"},
                files={"file": (SPEECH.name, f)},
            ) as streamed,
        ):
            events = stream_events(streamed.iter_lines())
        check_stream(events)
        assert events[-1]["type"] == "transcript.text.done" and SPEECH_WORDS <= words(events[-1]["text"])
        models = client.get("/models").json()
        check(models, "ListModelsResponse")
        check(client.get(f"/models/{models['data'][-1]['id']}").json(), "Model")
