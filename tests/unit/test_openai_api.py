"""The OpenAI-compatible endpoints in process, driven by the official ``openai``
SDK: the real routes and queue over a fake engine whose transcript comes in
three segments with word timings. What the real models hear through these
routes is tested in tests/e2e/test_openai_api_e2e.py."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from whisper_mcp.engines.audio import probe_audio
from whisper_mcp.options import TranscribeOptions

from fakes import FakeEngine
from helpers import FIXTURES, LONG_AUDIO, ROUTED, InProcessServer

SPEECH = FIXTURES / "speech.wav"
DURATION = round(probe_audio(SPEECH).duration, 3)
SPOKEN = f"fake transcript of {probe_audio(SPEECH).duration:.1f} seconds"
PARTS = [f"part {i} of {SPOKEN}" for i in (1, 2, 3)]
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", FakeEngine(segments=3, words=True)) as srv:
        yield srv


@pytest.fixture
def api(server: InProcessServer) -> Iterator[OpenAI]:
    # max_retries=0: a server error must show up here, not be retried away.
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def last_call(server: InProcessServer) -> tuple[str, TranscribeOptions]:
    return server.engine.calls[-1]


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_transcription_json(api: OpenAI, server: InProcessServer) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(model="whisper-1", file=f, temperature=0)
    assert result.text == " ".join(PARTS)
    # whisper-1 is the default model; OpenAI's temperature 0 (its default) is Whisper's fallback schedule.
    assert last_call(server) == ("tiny.en", TranscribeOptions(temperature=None, **ROUTED))


def test_transcription_text_srt_vtt(api: OpenAI) -> None:
    with open(SPEECH, "rb") as f:
        text = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and text.strip() == " ".join(PARTS), text

    with open(SPEECH, "rb") as f:
        srt = api.audio.transcriptions.create(model="tiny.en", file=f, response_format="srt")
    cues = [block.split("\n") for block in srt.strip().split("\n\n")]
    assert len(cues) == 3, srt
    previous = 0.0
    for number, cue in enumerate(cues, start=1):
        assert cue[0] == str(number), srt
        match = re.fullmatch(f"({SRT_TIME}) --> ({SRT_TIME})", cue[1])
        assert match, cue
        start, end = seconds(match[1]), seconds(match[2])
        assert previous <= start <= end, srt
        previous = start
        assert cue[2] == PARTS[number - 1], srt
    assert seconds(cues[-1][1].split(" --> ")[1]) == pytest.approx(DURATION, abs=0.001)

    with open(SPEECH, "rb") as f:
        vtt = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n"), vtt
    assert len(re.findall(f"^{VTT_TIME} --> {VTT_TIME}$", vtt, re.M)) == 3, vtt
    assert all(part in vtt for part in PARTS)


def test_transcription_verbose_json_with_words_and_segments(api: OpenAI, server: InProcessServer) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
            prompt="Friday report.",
            temperature=0.3,
        )
    # The request's choices reached the engine, in Whisper's terms.
    assert last_call(server) == (
        "tiny.en",
        TranscribeOptions(language="en", initial_prompt="Friday report.", temperature=0.3, word_timestamps=True),
    )
    assert result.task == "transcribe"
    assert result.language == "english"
    assert result.duration == pytest.approx(DURATION, abs=0.001)
    assert result.text == " ".join(PARTS)

    segments, said = result.segments, result.words
    assert [s.id for s in segments] == [0, 1, 2]
    for segment, part in zip(segments, PARTS, strict=True):
        assert segment.text == " " + part  # OpenAI keeps Whisper's leading space
        assert 0 <= segment.start <= segment.end <= result.duration
        assert segment.tokens == [] and segment.temperature == 0.3
    assert " ".join(s.text.strip() for s in segments) == result.text.strip()

    assert [w.word for w in said] == " ".join(PARTS).split()
    assert [w.start for w in said] == sorted(w.start for w in said)
    for word in said:
        assert 0 <= word.start <= word.end <= result.duration
        # Every word lies within a segment.
        assert any(s.start <= word.start and word.end <= s.end for s in segments), word


def test_verbose_json_granularities(api: OpenAI, server: InProcessServer) -> None:
    with open(SPEECH, "rb") as f:
        result = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert result.segments and result.words is None
    assert last_call(server)[1].word_timestamps is False  # no word timings asked: none computed
    # Words alone: no segments, as OpenAI.
    with open(SPEECH, "rb") as f:
        words_only = api.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert words_only.words and getattr(words_only, "segments", None) is None
    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["letter"],  # type: ignore[list-item]
        )
    assert err.value.param == "timestamp_granularities"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_into_english(api: OpenAI, server: InProcessServer) -> None:
    with open(FIXTURES / "spanish.wav", "rb") as f:
        result = api.audio.translations.create(model="base", file=f)
    model, options = last_call(server)
    assert (model, options.task, options.language) == ("base", "translate", None)
    assert result.text.startswith("part 1 of fake transcript")

    with open(FIXTURES / "spanish.wav", "rb") as f:
        verbose = api.audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert verbose.task == "translate" and verbose.language == "english"
    assert verbose.text == result.text and len(verbose.segments) == 3

    # An English-only model cannot translate.
    with open(FIXTURES / "spanish.wav", "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.translations.create(model="tiny.en", file=f)
    assert "English-only" in err.value.message and err.value.param == "model"


def test_models(api: OpenAI) -> None:
    ids = [m.id for m in api.models.list()]
    assert ids == ["whisper-1", "tiny.en", "base"]
    model = api.models.retrieve("tiny.en")
    assert model.id == "tiny.en" and model.object == "model" and model.owned_by == "whisper-mcp"
    assert api.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    assert missing.value.body["type"] == "invalid_request_error" and missing.value.param == "model"


def test_bad_audio_is_a_bad_request(api: OpenAI, server: InProcessServer) -> None:
    with open(FIXTURES / "not_audio.bin", "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f)
    assert "not a recognised audio format" in err.value.message
    assert err.value.body["type"] == "invalid_request_error"
    assert err.value.param == "file" and err.value.code == "invalid_audio"
    assert list((server.storage / "incoming").iterdir()) == []


def test_unknown_model_and_bad_options(api: OpenAI, server: InProcessServer) -> None:
    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="gpt-4o-transcribe", file=f)
    assert "Unknown model 'gpt-4o-transcribe'" in err.value.message
    assert err.value.param == "model" and err.value.code == "unknown_model"

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f, response_format="xml")  # type: ignore[call-overload]
    assert err.value.param == "response_format" and err.value.code == "unsupported_value"

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="diarized_json",
            known_speaker_names=["Ana"],
            known_speaker_references=["data:audio/wav;base64,AAAA"],
        )
    assert "known_speaker_references[0] (Ana) is not audio this server can read" in err.value.message

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="tiny.en", file=f, language="de")
    assert "English-only" in err.value.message

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f, temperature=3)
    assert err.value.param == "temperature"

    with open(SPEECH, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        api.audio.transcriptions.create(model="whisper-1", file=f, prompt="x" * 1001)
    assert err.value.param == "prompt"
    # None of them became a job, nor left its upload behind.
    assert server.engine.calls == []
    assert httpx.get(f"{server.url}/jobs").json()["total"] == 0
    assert list((server.storage / "incoming").iterdir()) == []


def test_no_file_and_a_bad_stream_value_are_refused(server: InProcessServer) -> None:
    url = f"{server.url}/v1/audio/transcriptions"
    no_file = httpx.post(url, data={"model": "whisper-1"}, files={"other": ("x", b"1")})
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file" and no_file.json()["error"]["code"] == "missing"
    with open(SPEECH, "rb") as f:
        stream = httpx.post(url, data={"model": "whisper-1", "stream": "maybe"}, files={"file": ("s.wav", f)})
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "stream"
    not_multipart = httpx.post(url, content=b"RIFF", headers={"content-type": "audio/wav"})
    assert not_multipart.status_code == 400
    assert not_multipart.json()["error"]["type"] == "invalid_request_error"


def test_client_hang_up_cancels_the_job(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()  # the job stays running until the gate opens
    with InProcessServer.start(tmp_path / "storage", engine) as server:
        name = f"hangup-{uuid.uuid4().hex}.mp3"
        with open(LONG_AUDIO, "rb") as f, pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (name, f)},
                data={"model": "whisper-1"},
                timeout=httpx.Timeout(30, read=0.5),
            )
        assert engine.started.wait(5)
        deadline = time.monotonic() + 10
        record: dict = {}
        while not record.get("cancel_requested"):
            assert time.monotonic() < deadline, record
            jobs = httpx.get(f"{server.url}/jobs").json()["jobs"]
            assert [j["filename"] for j in jobs] == [name]
            record = httpx.get(f"{server.url}/status/{jobs[0]['job_id']}").json()
            time.sleep(0.02)
        assert record["status"] == "processing"
        # The running job stops at its next window.
        engine.gate.set()
        while record["status"] == "processing":
            assert time.monotonic() < deadline, record
            record = httpx.get(f"{server.url}/status/{record['job_id']}").json()
            time.sleep(0.02)
        assert record["status"] == "cancelled", record


def test_client_hang_up_cancels_a_queued_job_at_once(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as client:
        blocker = client.post("/transcribe", files={"file": ("b.mp3", LONG_AUDIO.read_bytes())}).json()
        assert engine.started.wait(5)
        with open(SPEECH, "rb") as f, pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("queued.wav", f)},
                timeout=httpx.Timeout(30, read=0.5),
            )
        deadline = time.monotonic() + 10
        while True:
            queued = [j for j in client.get("/jobs").json()["jobs"] if j["filename"] == "queued.wav"]
            if queued and queued[0]["status"] == "cancelled":
                break
            assert time.monotonic() < deadline, queued
            time.sleep(0.02)
        assert client.get(f"/status/{blocker['job_id']}").json()["status"] == "processing"
