"""Every kind of answer the /v1 routes give, checked against OpenAI's published
schemas (tests/openai_schema): each response format of transcriptions and
translations, the stream's events, models, and the errors, the router's and
the access guard's included. In process, over a fake engine; the real model's
answers are checked in tests/e2e/test_openai_api_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from whisper_mcp.engines.base import BatchItem

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer
from openai_schema import DOCUMENT, check, check_stream, problems, stream_events

SPEECH = FIXTURES / "speech.wav"
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "openai_schema"


class FailingEngine(FakeEngine):
    def transcribe_batch(self, items: Sequence[BatchItem], model: Any, options: Any) -> list:
        return [RuntimeError("the fake decoder broke") for _ in items]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    storage = tmp_path_factory.mktemp("v1") / "storage"
    with InProcessServer.start(storage, FakeEngine(segments=3, words=True)) as srv:
        yield srv


@pytest.fixture
def client(server: InProcessServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def post(client: httpx.Client, path: str, audio: Path = SPEECH, **fields: str | list[str]) -> httpx.Response:
    with open(audio, "rb") as f:
        return client.post(f"/v1/audio/{path}", data=fields, files={"file": (audio.name, f)})


def test_the_vendored_schemas_name_their_source_and_refuse_what_v1_once_sent() -> None:
    source = DOCUMENT["x-source"]
    readme = (SCHEMA_DIR / "README.md").read_text()
    assert source["url"] in readme and source["commit"] in readme
    assert "MIT License" in (SCHEMA_DIR / "LICENSE").read_text()
    # What the stream and the router said before: a null where OpenAI has an
    # array, duration usage where it has token counts, an error missing fields.
    assert problems({"type": "transcript.text.delta", "delta": " x", "logprobs": None}, "TranscriptTextDeltaEvent")
    done = {"type": "transcript.text.done", "text": "x", "usage": {"type": "duration", "seconds": 1}}
    assert problems(done, "TranscriptTextDoneEvent")
    assert problems({"error": {"code": "http_404", "message": "No route"}}, "ErrorResponse")


@pytest.mark.parametrize(
    ("fields", "schema"),
    [
        ({}, "CreateTranscriptionResponseJson"),
        ({"response_format": "json", "language": "en", "prompt": "Friday.", "temperature": "0.2"}, "CreateTranscriptionResponseJson"),
        ({"response_format": "verbose_json"}, "CreateTranscriptionResponseVerboseJson"),
        ({"response_format": "verbose_json", "timestamp_granularities[]": ["word"]}, "CreateTranscriptionResponseVerboseJson"),
        (
            {"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
            "CreateTranscriptionResponseVerboseJson",
        ),
        ({"response_format": "diarized_json"}, "CreateTranscriptionResponseDiarizedJson"),
    ],
)  # fmt: skip
def test_transcriptions(client: httpx.Client, fields: dict[str, str | list[str]], schema: str) -> None:
    response = post(client, "transcriptions", model="whisper-1", **fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    check(response.json(), schema)


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [("json", "CreateTranslationResponseJson"), ("verbose_json", "CreateTranslationResponseVerboseJson")],
)
def test_translations(client: httpx.Client, fmt: str, schema: str) -> None:
    response = post(client, "translations", FIXTURES / "spanish.wav", model="base", response_format=fmt)
    assert response.status_code == 200, response.text
    check(response.json(), schema)


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_formats_are_plain_text(client: httpx.Client, fmt: str) -> None:
    # OpenAI's document gives these no schema; OpenAI sends them as plain text.
    response = post(client, "transcriptions", model="whisper-1", response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "part 3 of" in response.text


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "diarized_json"])
def test_stream_events(server: InProcessServer, fmt: str) -> None:
    with (
        open(SPEECH, "rb") as f,
        httpx.stream(
            "POST",
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1", "stream": "true", "response_format": fmt},
            files={"file": ("s.wav", f)},
            timeout=30,
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = stream_events(response.iter_lines())
    check_stream(events)
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]


def test_logprobs_in_json_and_in_stream_events(server: InProcessServer, client: httpx.Client) -> None:
    """include[]=logprobs: one entry per word (token, logprob, bytes), in json and in every stream event."""
    response = post(client, "transcriptions", model="whisper-1", **{"include[]": "logprobs"})
    assert response.status_code == 200, response.text
    body = response.json()
    check(body, "CreateTranscriptionResponseJson")
    words = body["text"].split()
    assert [e["token"].strip() for e in body["logprobs"]] == words
    assert all(e["logprob"] <= 0 and bytes(e["bytes"]).decode() == e["token"] for e in body["logprobs"])
    with (
        open(SPEECH, "rb") as f,
        httpx.stream(
            "POST",
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1", "stream": "true", "include[]": "logprobs"},
            files={"file": ("s.wav", f)},
            timeout=30,
        ) as streamed,
    ):
        events = stream_events(streamed.iter_lines())
    check_stream(events)
    assert all(e["logprobs"] for e in events)
    assert [t for e in events[:-1] for t in e["logprobs"]] == events[-1]["logprobs"]
    # Without include[], no logprobs field at all (never null).
    assert "logprobs" not in post(client, "transcriptions", model="whisper-1").json()


def test_models(client: httpx.Client) -> None:
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    check(listing.json(), "ListModelsResponse")
    for model in listing.json()["data"]:
        one = client.get(f"/v1/models/{model['id']}")
        assert one.status_code == 200
        check(one.json(), "Model")


@pytest.mark.parametrize(
    ("method", "path", "fields", "status"),
    [
        ("POST", "/v1/audio/transcriptions", {"response_format": "xml"}, 400),
        ("POST", "/v1/audio/transcriptions", {"model": "gpt-4o-transcribe"}, 400),
        ("POST", "/v1/audio/transcriptions", {"stream": "maybe"}, 400),
        ("POST", "/v1/audio/transcriptions", {"temperature": "warm"}, 400),
        ("POST", "/v1/audio/transcriptions", {"language": "xx"}, 400),
        ("POST", "/v1/audio/transcriptions", {"response_format": "verbose_json", "timestamp_granularities[]": "letter"}, 400),
        ("POST", "/v1/audio/transcriptions", {"known_speaker_names[]": "Ana"}, 400),
        ("POST", "/v1/audio/translations", {"model": "tiny.en"}, 400),
        ("POST", "/v1/audio/transcriptions", {"include[]": "everything"}, 400),
        ("GET", "/v1/models/no-such-model", None, 404),
        ("GET", "/v1/no-such-route", None, 404),
        ("POST", "/v1/models", None, 405),
        ("GET", "/v1/audio/transcriptions", None, 405),
    ],
)  # fmt: skip
def test_errors(client: httpx.Client, method: str, path: str, fields: dict[str, str] | None, status: int) -> None:
    if fields is None:
        response = client.request(method, path)
    else:
        with open(SPEECH, "rb") as f:
            response = client.request(method, path, data=fields, files={"file": ("s.wav", f)})
    assert response.status_code == status, response.text
    check(response.json(), "ErrorResponse")


def test_errors_of_the_request_itself(client: httpx.Client) -> None:
    url = "/v1/audio/transcriptions"
    answers = [
        client.post(url, data={"model": "whisper-1"}, files={"other": ("x", b"1")}),  # no file
        client.post(url, content=b"RIFF", headers={"content-type": "audio/wav"}),  # not multipart
        post(client, "transcriptions", FIXTURES / "not_audio.bin"),
        post(client, "transcriptions", FIXTURES / "empty.wav"),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        check(response.json(), "ErrorResponse")


def test_an_upload_over_the_limit(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", max_upload_mb=1) as server, server.client() as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("big.wav", b"\0" * 2**21)})
    assert response.status_code == 413, response.text
    check(response.json(), "ErrorResponse")


def test_a_failed_job(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", FailingEngine()) as server, server.client() as client:
        answer = post(client, "transcriptions", model="whisper-1")
        assert answer.status_code == 500
        check(answer.json(), "ErrorResponse")
        with (
            open(SPEECH, "rb") as f,
            client.stream(
                "POST", "/v1/audio/transcriptions", data={"stream": "true"}, files={"file": ("s.wav", f)}
            ) as response,
        ):
            events = stream_events(response.iter_lines())
    check_stream(events)
    assert "error" in events[-1], events


def test_the_access_guard_answers_v1_in_openai_shape(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", token="s3cret") as server, server.client() as client:
        for response in (client.get("/v1/models"), post(client, "transcriptions", model="whisper-1")):
            assert response.status_code == 401
            check(response.json(), "ErrorResponse")
        # Elsewhere the server's own shape, as before.
        assert json.loads(client.get("/jobs").text)["error"].keys() == {"code", "message"}
        hostile = client.post("/v1/audio/transcriptions", headers={"origin": "https://evil.example"})
        assert hostile.status_code == 403
        check(hostile.json(), "ErrorResponse")
