"""The OpenAI-compatible endpoints, driven by the official ``openai`` SDK
against the real server and the real models."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, words

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
        assert segment.text.strip() and segment.tokens == []
    assert " ".join(s.text.strip() for s in segments) == result.text.strip()

    assert [w.start for w in said] == sorted(w.start for w in said)
    for word in said:
        assert word.word == word.word.strip() and word.word
        assert 0 <= word.start <= word.end <= result.duration + 0.5
        # Every word lies within a segment.
        assert any(s.start - 0.05 <= word.start and word.end <= s.end + 0.05 for s in segments), word
    assert SPEECH_WORDS <= words(" ".join(w.word for w in said))


def test_verbose_json_without_granularities_has_segments_only(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert result.segments and result.words is None


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_into_english(api: OpenAI) -> None:
    with open(FIXTURES / "spanish.wav", "rb") as f:
        result = api.audio.translations.create(model="base", file=f)
    assert {"good", "morning", "thank"} <= words(result.text), result.text

    with open(FIXTURES / "spanish.wav", "rb") as f:
        verbose = api.audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert verbose.task == "translate" and verbose.language == "english"
    assert verbose.text == result.text and verbose.segments


def test_models(api: OpenAI) -> None:
    ids = [m.id for m in api.models.list()]
    assert ids[0] == "whisper-1"
    assert {"whisper-1", "tiny.en", "base"} <= set(ids)
    model = api.models.retrieve("tiny.en")
    assert model.id == "tiny.en" and model.object == "model" and model.owned_by == "whisper-mcp"
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_bad_audio_is_a_bad_request(api: OpenAI) -> None:
    with open(FIXTURES / "not_audio.bin", "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f)
    assert "not a recognised audio format" in err.value.message
    assert err.value.body["type"] == "invalid_request_error"
    assert err.value.param == "file" and err.value.code == "invalid_audio"


def test_unknown_model_and_bad_options(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="gpt-4o-transcribe", file=f)
    assert "Unknown model 'gpt-4o-transcribe'" in err.value.message
    assert err.value.param == "model" and err.value.code == "unknown_model"

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f, response_format="diarized_json")
    assert err.value.param == "response_format"

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="tiny.en", file=f, language="de")
    assert "English-only" in err.value.message


def test_client_hang_up_cancels_the_job(server: ServerProcess) -> None:
    name = f"hangup-{uuid.uuid4().hex}.mp3"
    with open(LONG_AUDIO, "rb") as f, pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (name, f)},
            # A prompt of its own, so no cached transcript answers at once.
            data={"model": "whisper-1", "prompt": name},
            timeout=httpx.Timeout(30, read=0.5),
        )
    # The hang-up cancels the job: at once when queued, at its next 30 s
    # window when running (not waited for here).
    deadline = time.monotonic() + 20
    record: dict = {}
    while time.monotonic() < deadline:
        jobs = httpx.get(f"{server.url}/jobs", params={"limit": 500}).json()["jobs"]
        mine = [j for j in jobs if j["filename"] == name]
        if mine:
            assert len(mine) == 1
            record = httpx.get(f"{server.url}/status/{mine[0]['job_id']}").json()
            if record["status"] == "cancelled" or record.get("cancel_requested"):
                break
        time.sleep(0.1)
    assert record.get("status") == "cancelled" or record.get("cancel_requested") is True, record
