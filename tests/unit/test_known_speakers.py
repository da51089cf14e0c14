"""Known speakers (OpenAI's known_speaker_names[] / known_speaker_references[]):
matching names to clusters, checking the references, storing them with the
job (through a restart, and gone with its audio), and /v1, POST /transcribe
and the transcribe_wav tool over a fake engine. The real model names the
dialogue's voices in tests/e2e/test_diarization_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import io
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from openai import OpenAI

from whisper_mcp.diarization.naming import MIN_SIMILARITY, Naming, match, report
from whisper_mcp.diarization.references import (
    MAX_KNOWN_SPEAKERS,
    MAX_REFERENCE_BYTES,
    MAX_REFERENCE_FIELD_BYTES,
    pair,
    read_reference,
)
from whisper_mcp.errors import InvalidInput
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.queue.files import FileStore, StoredUpload
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.sqlite import SQLiteDatabase
from whisper_mcp.queue.store import SQLJobStore
from whisper_mcp.server.http.diarized import diarized_json
from whisper_mcp.server.http.forms import known_speakers, names_known_speakers
from whisper_mcp.server.http.openapi import openapi_spec

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, request, wait_done

SPEECH = FIXTURES / "speech.wav"

# -- matching names to clusters ------------------------------------------------------------------


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_names_go_to_clusters_one_to_one_most_similar_first() -> None:
    centroids = {"SPEAKER_01": unit(1, 0, 0), "SPEAKER_02": unit(0, 1, 0), "SPEAKER_03": unit(0, 0, 1)}
    # Both names resemble SPEAKER_01 most; Ana more so, so Bo gets his next best.
    references = {"Bo": unit(0.8, 0.6, 0), "Ana": unit(1, 0.1, 0)}
    naming = match(centroids, references)
    assert naming.names == {"SPEAKER_01": "Ana", "SPEAKER_02": "Bo"}
    assert naming.best == {"Bo": 0.8, "Ana": pytest.approx(0.995, abs=0.001)}


def test_a_name_below_the_threshold_or_without_speech_names_nobody() -> None:
    centroids = {"SPEAKER_01": unit(1, 0), "SPEAKER_02": unit(0, 1)}
    far = unit(-1, -0.2)
    naming = match(centroids, {"Ana": unit(1, 0.05), "Far": far, "Mute": None})
    assert naming.names == {"SPEAKER_01": "Ana"}  # SPEAKER_02 keeps its label
    assert naming.best["Mute"] is None and (naming.best["Far"] or 0) < MIN_SIMILARITY
    # More names than clusters: the second name for a voice gets nothing.
    twice = match({"SPEAKER_01": unit(1, 0)}, {"Ana": unit(1, 0), "Ann": unit(0.9, 0.1)})
    assert twice.names == {"SPEAKER_01": "Ana"}


def test_the_report_says_how_each_name_fared() -> None:
    naming = Naming({"SPEAKER_01": "Ana"}, {"Ana": 0.91, "Far": 0.12, "Mute": None, "Ann": 0.8})
    listed, notes = report(naming)
    assert listed == [
        {"name": "Ana", "matched": True, "similarity": 0.91},
        {"name": "Far", "matched": False, "similarity": 0.12},
        {"name": "Mute", "matched": False, "similarity": None},
        {"name": "Ann", "matched": False, "similarity": 0.8},
    ]
    assert notes == [
        "known speaker 'Far' matched no speaker (best similarity 0.12, needs 0.50)",
        "known speaker 'Mute': no speech found in the reference recording",
        "known speaker 'Ann': the speaker it resembles most was given another name",
    ]


# -- checking the request ------------------------------------------------------------------------


def tone(seconds: float, rate: int = 44_100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(pcm, channels).tobytes())
    return out.getvalue()


def data_url(data: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


REF = data_url(tone(3.0))
SHORT_REF = data_url(tone(1.0))
NOT_AUDIO_REF = data_url(b"RIFF....WAVEnot really")


@pytest.mark.parametrize(
    ("names", "refs", "words"),
    [
        (["Ana"], [], "known_speaker_names has 1 entries and known_speaker_references 0"),
        ([], [REF], "known_speaker_names has 0 entries and known_speaker_references 1"),
        (["A", "B", "C", "D", "E"], [REF] * 5, f"At most {MAX_KNOWN_SPEAKERS} known speakers"),
        (["  "], [REF], "known_speaker_names[0] is blank"),
        (["x" * 65], [REF], "longer than 64 characters"),
        (["Ana", "Ana"], [REF, REF], "lists 'Ana' twice"),
        (["Ana"], ["https://example.com/ana.wav"], "must be an audio data URL"),
        (["Ana"], ["data:text/plain;base64,AAAA"], "must be an audio data URL"),
    ],
)
def test_bad_pairs_are_refused_in_words(names: list[str], refs: list[str], words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        pair(names, refs)
    assert words in err.value.message


# Names as a hostile or careless client sends them, and as they are kept.
DIRTY_NAMES = ["Ana\x1b[31m", "Bo\r\nSmith\x00"]
CLEAN_NAMES = ["Ana[31m", "Bo Smith"]


def test_names_lose_their_control_characters() -> None:
    assert [name for name, _ in pair(DIRTY_NAMES, [REF, REF])] == CLEAN_NAMES
    assert [name for name, _ in pair(["\tZoë\u2028Ng\x7f "], [REF])] == ["Zoë Ng"]
    with pytest.raises(InvalidInput, match=r"known_speaker_names\[0\] is blank"):
        pair(["\x00\x1b\r\n"], [REF])
    with pytest.raises(InvalidInput, match="lists 'Ana' twice"):
        pair(["Ana", "Ana\x1b"], [REF, REF])


def test_known_speakers_are_read_from_the_form_with_or_without_brackets() -> None:
    fields = {"known_speaker_names[]": ["Ana"], "known_speaker_references[]": [REF]}
    assert known_speakers(fields) == [("Ana", REF)] and names_known_speakers(fields)
    bare = {"known_speaker_names": ["Ana", "Bo"], "known_speaker_references": [REF, REF]}
    assert known_speakers(bare) == [("Ana", REF), ("Bo", REF)]
    assert known_speakers({}) == [] and not names_known_speakers({"model": ["tiny.en"]})
    assert names_known_speakers({"known_speaker_references": [REF]})
    with pytest.raises(InvalidInput, match="known_speaker_names has 1 entries and known_speaker_references 0"):
        known_speakers({"known_speaker_names[]": ["Ana"]})


def test_a_reference_becomes_16k_mono_wav() -> None:
    speaker = read_reference(0, "Ana", REF)
    assert speaker.name == "Ana" and speaker.seconds == pytest.approx(3.0, abs=0.01)
    with wave.open(io.BytesIO(speaker.wav)) as f:
        assert (f.getnchannels(), f.getframerate(), f.getsampwidth()) == (1, 16_000, 2)
        assert f.getnframes() == pytest.approx(48_000, abs=20)
    assert speaker.sha256 == hashlib.sha256(speaker.wav).hexdigest()
    assert read_reference(0, "Ana", REF).sha256 == speaker.sha256  # the cache key is stable
    # Any format the server reads: FLAC from the fixtures' espeak speech.
    flac = read_reference(1, "Bo", data_url((FIXTURES / "speech.flac").read_bytes(), "audio/flac"))
    assert 2.0 <= flac.seconds <= 10.0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (data_url(tone(1.0)), "known_speaker_references[0] (Ana) is 1.0 s long; send 2-10 s"),
        (data_url(tone(11.0, 16_000, 1)), "known_speaker_references[0] (Ana) is longer than 10 s"),
        (data_url((FIXTURES / "not_audio.bin").read_bytes()), "is not audio this server can read"),
        ("data:audio/wav;base64,not base64!", "is not valid base64"),
        ("data:audio/wav;base64,", "holds no audio"),
        (data_url(b"\0" * (MAX_REFERENCE_BYTES + 1)), "at most 2 MiB"),
    ],
)
def test_bad_references_are_refused_in_words(url: str, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        read_reference(0, "Ana", url)
    assert words in err.value.message


def test_options_carry_known_speakers_only_when_given() -> None:
    plain = TranscribeOptions(diarize=True)
    assert "known_speakers" not in plain.to_json()  # other jobs' cache keys unchanged
    named = TranscribeOptions(diarize=True, known_speakers=(("Ana", "ab" * 32),))
    again = TranscribeOptions.from_json(named.to_json())
    assert again == named and hash(again) == hash(named)


def test_diarized_json_keeps_given_names_and_letters_the_rest() -> None:
    result = {
        "text": "Hi. Hello. Bye.",
        "duration": 3.0,
        "speakers": ["SPEAKER_00", "Ana", "SPEAKER_01"],
        "known_speakers": [{"name": "Ana", "matched": True}, {"name": "Bo", "matched": False}],
        "segments": [
            {"start": 0.0, "end": 1.0, "text": "Hi.", "speaker": "SPEAKER_00"},
            {"start": 1.0, "end": 2.0, "text": "Hello.", "speaker": "Ana"},
            {"start": 2.0, "end": 3.0, "text": "Bye.", "speaker": "SPEAKER_01"},
        ],
    }
    assert [s["speaker"] for s in diarized_json(result)["segments"]] == ["A", "Ana", "B"]


# -- stored with the job -------------------------------------------------------------------------


def upload(files: FileStore, data: bytes) -> StoredUpload:
    path = files.incoming / f"upload-{time.monotonic_ns()}"
    path.write_bytes(data)
    return StoredUpload(path, len(data), hashlib.sha256(data).hexdigest())


def test_references_are_kept_through_a_restart_and_go_with_the_audio(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "storage")
    open_store = lambda: SQLJobStore(SQLiteDatabase(files.database))  # noqa: E731
    options = TranscribeOptions(diarize=True, known_speakers=(("Ana", "a" * 64), ("Bo", "b" * 64)))
    queue = JobQueue(open_store(), files)
    job = queue.enqueue(upload(files, b"audio"), request("named", options=options), references=[b"ana", b"bo"])
    other = queue.enqueue(upload(files, b"other audio"), request("other", options=options), references=[b"x", b"y"])
    litter = files.speakers_dir / "0123456789abcdef0123456789abcdef.0.wav"  # a job that was never stored
    litter.write_bytes(b"litter")
    queue.close()  # the process stops

    queue = JobQueue(open_store(), files)
    try:
        queue.recover()
        assert not litter.exists()
        stored = queue.get("named")
        assert stored is not None and stored.options == options
        assert files.reference_path(job.key, 0).read_bytes() == b"ana"
        assert files.reference_path(job.key, 1).read_bytes() == b"bo"
        claimed = queue.claim_next()
        assert claimed is not None and claimed.job_id == "named" and claimed.options == options
        assert queue.complete(claimed, {"text": "", "segments": []}, "en") == JobStatus.COMPLETED.value
        assert list(files.speakers_dir.glob(f"{job.key}.*")) == []  # gone with the audio
        assert files.reference_path(other.key, 0).exists()
        assert queue.cancel("other") == JobStatus.CANCELLED.value
        assert list(files.speakers_dir.iterdir()) == []
    finally:
        queue.close()


# -- over /v1 (fake engine) ----------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", FakeEngine()) as srv:
        yield srv


@pytest.fixture
def api(server: InProcessServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def transcribe(api: OpenAI, names: list[str], refs: list[str], fmt: str = "diarized_json") -> object:
    with open(SPEECH, "rb") as f:
        return api.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format=fmt,  # type: ignore[arg-type]
            known_speaker_names=names,
            known_speaker_references=refs,
        )


def test_known_speakers_reach_the_engine_as_stored_recordings(api: OpenAI, server: InProcessServer) -> None:
    long_ref = data_url(tone(9.5, 48_000, 2))  # 1.8 MB: far over the usual 64 KiB form field
    result = transcribe(api, ["Ana", "Bo"], [REF, long_ref])
    assert result.task == "transcribe"  # type: ignore[attr-defined]
    assert_named(server, ["Ana", "Bo"], REF)


def test_names_reach_the_engine_without_control_characters(api: OpenAI, server: InProcessServer) -> None:
    transcribe(api, DIRTY_NAMES, [REF, REF])
    assert_named(server, CLEAN_NAMES, REF)


def assert_named(server: InProcessServer, names: list[str], first_reference: str) -> None:
    """The ended job's engine call got ``names``, each with its stored
    recording, and left nothing behind."""
    (seen,) = server.engine.known_speakers
    assert [name for name, _ in seen] == names
    assert seen[0][1] == read_reference(0, names[0], first_reference).wav
    _, options = server.engine.calls[-1]
    assert options.diarize and [n for n, _ in options.known_speakers] == names
    assert list((server.storage / "speakers").iterdir()) == []  # removed when the job ended
    assert list((server.storage / "incoming").iterdir()) == []


def assert_refused(server: InProcessServer) -> None:
    """Nothing reached the engine and nothing was left behind."""
    assert server.engine.calls == []
    assert list((server.storage / "incoming").iterdir()) == []
    assert list((server.storage / "speakers").iterdir()) == []


@pytest.mark.parametrize(
    ("names", "refs", "fmt", "words"),
    [
        (["Ana"], [REF], "json", "apply with response_format=diarized_json only"),
        (["Ana", "Bo"], [REF], "diarized_json", "known_speaker_names has 2 entries"),
        (["Ana"], [SHORT_REF], "diarized_json", "(Ana) is 1.0 s long"),
        (["Ana"], [NOT_AUDIO_REF], "diarized_json", "(Ana) is not audio"),
    ],
)
def test_bad_known_speakers_get_a_400(
    api: OpenAI, server: InProcessServer, names: list[str], refs: list[str], fmt: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(api, names, refs, fmt)
    assert words in err.value.message
    assert_refused(server)


# -- over POST /transcribe (fake engine) ---------------------------------------------------------


def post(http: httpx.Client, names: list[str], refs: list[str], brackets: str = "[]", **fields: str) -> httpx.Response:
    """POST /transcribe with known speakers as repeated form fields, as curl -F sends them."""
    speakers = {f"known_speaker_names{brackets}": names, f"known_speaker_references{brackets}": refs}
    with open(SPEECH, "rb") as f:
        return http.post("/transcribe", files={"file": f}, data={**speakers, **fields})


@pytest.mark.parametrize("brackets", ["[]", ""])
def test_known_speakers_reach_the_engine_through_rest(server: InProcessServer, brackets: str) -> None:
    long_ref = data_url(tone(9.5, 48_000, 2))  # 1.8 MB: far over the usual 64 KiB form field
    with server.client() as http:
        answer = post(http, ["Ana", "Bo"], [REF, long_ref], brackets, diarize="true")
        assert answer.status_code == 202, answer.text
        assert answer.json()["options"]["known_speakers"] == ["Ana", "Bo"]
        assert wait_done(http, answer.json()["job_id"])["status"] == "completed"
    assert_named(server, ["Ana", "Bo"], REF)


def test_names_are_kept_and_echoed_without_control_characters_by_rest(server: InProcessServer) -> None:
    with server.client() as http:
        answer = post(http, DIRTY_NAMES, [REF, REF], diarize="true")
        assert answer.status_code == 202, answer.text
        assert answer.json()["options"]["known_speakers"] == CLEAN_NAMES
        done = wait_done(http, answer.json()["job_id"])
        assert done["options"]["known_speakers"] == CLEAN_NAMES
    assert_named(server, CLEAN_NAMES, REF)


def test_the_openapi_document_describes_the_rest_fields() -> None:
    submission = openapi_spec()["components"]["schemas"]["Submission"]["properties"]
    for field in ("known_speaker_names[]", "known_speaker_references[]"):
        assert submission[field]["type"] == "array" and submission[field]["maxItems"] == MAX_KNOWN_SPEAKERS
    assert submission["known_speaker_references[]"]["items"]["maxLength"] == MAX_REFERENCE_FIELD_BYTES


DIARIZE = {"diarize": "true"}


@pytest.mark.parametrize(
    ("names", "refs", "fields", "words"),
    [
        (["Ana"], [REF], {}, "known speakers apply to diarized transcriptions only"),
        (["Ana", "Bo"], [REF], DIARIZE, "known_speaker_names has 2 entries"),
        (["A", "B", "C", "D", "E"], [REF] * 5, DIARIZE, f"At most {MAX_KNOWN_SPEAKERS} known speakers"),
        (["Ana", "Ana"], [REF, REF], DIARIZE, "lists 'Ana' twice"),
        (["Ana"], ["https://example.com/ana.wav"], DIARIZE, "must be an audio data URL"),
        (["Ana"], [SHORT_REF], DIARIZE, "(Ana) is 1.0 s long"),
        (["Ana"], [NOT_AUDIO_REF], DIARIZE, "(Ana) is not audio"),
        (["Ana"], [data_url(b"\0" * (MAX_REFERENCE_BYTES + 1))], DIARIZE, "(Ana) is 2.0 MiB; at most 2 MiB"),
        (["Ana"], ["data:audio/wav;base64," + "A" * MAX_REFERENCE_FIELD_BYTES], DIARIZE, "is too long"),
    ],
    ids=["no-diarize", "unpaired", "too-many", "twice", "not-data-url", "short", "not-audio", "too-big", "too-long"],
)
def test_bad_known_speakers_get_a_400_from_rest(
    server: InProcessServer, names: list[str], refs: list[str], fields: dict[str, str], words: str
) -> None:
    with server.client() as http:
        answer = post(http, names, refs, **fields)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]["message"]
    assert_refused(server)


@pytest.mark.parametrize("route", ["/transcribe", "/v1/audio/transcriptions"])
def test_too_many_large_references_get_a_413_that_names_their_limit(server: InProcessServer, route: str) -> None:
    # Ten references, each within its own limit, 27 MB together: far below the upload limit.
    reference = "data:audio/wav;base64," + "A" * (MAX_REFERENCE_FIELD_BYTES - 100)
    speakers = {"known_speaker_names[]": [f"S{i}" for i in range(10)], "known_speaker_references[]": [reference] * 10}
    with server.client() as http, open(SPEECH, "rb") as f:
        answer = http.post(route, files={"file": f}, data={**speakers, "diarize": "true", "model": "whisper-1"})
    assert answer.status_code == 413, answer.text
    message = answer.json()["error"]["message"]
    room = 4 * MAX_REFERENCE_FIELD_BYTES
    expected = f"The known_speaker_references fields exceed their limit of {room / 2**20:.1f} MiB in all"
    assert message.startswith(expected), message
    assert "4 values of at most 2.7 MiB each" in message and "1024" not in message
    assert_refused(server)


# -- over the transcribe_wav tool (fake engine) ---------------------------------------------------


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def wait_over_mcp(client: Client, queued: dict) -> dict:
    answer = await client.call_tool("check_transcription_status", {"job_id": queued["job_id"], "wait_seconds": 20})
    return answer.structured_content  # type: ignore[return-value]


@pytest.mark.anyio
async def test_known_speakers_reach_the_engine_through_the_mcp_tool(server: InProcessServer) -> None:
    # A data URL, or the file's base64 alone.
    speakers = [{"name": "Ana", "reference": REF}, {"name": "Bo", "reference": base64.b64encode(tone(2.5)).decode()}]
    async with Client(f"{server.url}/mcp") as client:
        tools = {t.name: t for t in await client.list_tools()}
        schema = tools["transcribe_wav"].input_schema
        assert schema["properties"]["known_speakers"]["maxItems"] == MAX_KNOWN_SPEAKERS
        # The one-time upload URL takes no known speakers: the file is sent with them instead.
        assert "known_speakers" not in tools["create_upload_url"].input_schema["properties"]
        assert "transcribe_wav(known_speakers=...)" in (tools["create_upload_url"].description or "")
        with pytest.raises(ToolError, match="known_speakers"):
            await client.call_tool("create_upload_url", {"diarize": True, "known_speakers": speakers})
        queued = await client.call_tool(
            "transcribe_wav", {"audio_base64": b64(SPEECH), "diarize": True, "known_speakers": speakers}
        )
        assert queued.structured_content["options"]["known_speakers"] == ["Ana", "Bo"]
        assert (await wait_over_mcp(client, queued.structured_content))["status"] == "completed"
    assert_named(server, ["Ana", "Bo"], REF)


@pytest.mark.anyio
async def test_names_are_kept_without_control_characters_by_the_mcp_tool(server: InProcessServer) -> None:
    speakers = [{"name": name, "reference": REF} for name in DIRTY_NAMES]
    async with Client(f"{server.url}/mcp") as client:
        queued = await client.call_tool(
            "transcribe_wav", {"audio_base64": b64(SPEECH), "diarize": True, "known_speakers": speakers}
        )
        assert queued.structured_content["options"]["known_speakers"] == CLEAN_NAMES
        assert (await wait_over_mcp(client, queued.structured_content))["status"] == "completed"
    assert_named(server, CLEAN_NAMES, REF)


@pytest.mark.anyio
async def test_a_chunked_upload_stays_for_a_retry_after_bad_known_speakers(server: InProcessServer) -> None:
    data = SPEECH.read_bytes()
    async with Client(f"{server.url}/mcp") as client:
        begun = (await client.call_tool("begin_upload", {"size": len(data)})).structured_content
        upload = {"upload_id": begun["upload_id"], "offset": 0, "data_base64": base64.b64encode(data).decode()}
        await client.call_tool("upload_chunk", upload)
        options = {"upload_id": begun["upload_id"], "diarize": True}
        with pytest.raises(ToolError, match=r"known_speaker_references\[0\] \(Ana\) is 1.0 s long"):
            await client.call_tool(
                "transcribe_wav", {**options, "known_speakers": [{"name": "Ana", "reference": SHORT_REF}]}
            )
        queued = await client.call_tool(
            "transcribe_wav", {**options, "known_speakers": [{"name": "Ana", "reference": REF}]}
        )
        assert (await wait_over_mcp(client, queued.structured_content))["status"] == "completed"
    assert_named(server, ["Ana"], REF)


@pytest.mark.parametrize(
    ("speakers", "diarize", "words"),
    [
        ([("Ana", REF)], False, "known speakers apply to diarized transcriptions only"),
        ([(name, REF) for name in "ABCDE"], True, f"At most {MAX_KNOWN_SPEAKERS} known speakers"),
        ([(" ", REF)], True, "known_speaker_names[0] is blank"),
        ([("Ana", REF), ("Ana", REF)], True, "lists 'Ana' twice"),
        ([("Ana", "https://example.com/ana.wav")], True, "must be an audio data URL"),
        ([("Ana", "not base64!")], True, "(Ana) is not valid base64"),
        ([("Ana", SHORT_REF)], True, "(Ana) is 1.0 s long"),
        ([("Ana", NOT_AUDIO_REF)], True, "(Ana) is not audio"),
    ],
    ids=["no-diarize", "too-many", "blank", "twice", "not-data-url", "not-base64", "short", "not-audio"],
)
@pytest.mark.anyio
async def test_bad_known_speakers_are_refused_by_the_mcp_tool(
    server: InProcessServer, speakers: list[tuple[str, str]], diarize: bool, words: str
) -> None:
    known = [{"name": name, "reference": reference} for name, reference in speakers]
    async with Client(f"{server.url}/mcp") as client:
        with pytest.raises(ToolError) as err:
            await client.call_tool(
                "transcribe_wav", {"audio_base64": b64(SPEECH), "diarize": diarize, "known_speakers": known}
            )
    assert words in str(err.value)
    assert_refused(server)
