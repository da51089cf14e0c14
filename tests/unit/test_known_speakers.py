"""Known speakers (OpenAI's known_speaker_names[] / known_speaker_references[]):
matching names to clusters, checking the references, storing them with the
job (through a restart, and gone with its audio), and /v1 over a fake engine.
The real model names the dialogue's voices in tests/e2e/test_diarization_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import io
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from openai import OpenAI

from whisper_mcp.diarization.naming import MIN_SIMILARITY, Naming, match, report
from whisper_mcp.diarization.references import (
    MAX_KNOWN_SPEAKERS,
    MAX_REFERENCE_BYTES,
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
    (seen,) = server.engine.known_speakers
    assert [name for name, _ in seen] == ["Ana", "Bo"]
    assert seen[0][1] == read_reference(0, "Ana", REF).wav
    _, options = server.engine.calls[-1]
    assert options.diarize and [n for n, _ in options.known_speakers] == ["Ana", "Bo"]
    assert list((server.storage / "speakers").iterdir()) == []  # removed when the job ended
    assert list((server.storage / "incoming").iterdir()) == []


@pytest.mark.parametrize(
    ("names", "refs", "fmt", "words"),
    [
        (["Ana"], [REF], "json", "apply with response_format=diarized_json only"),
        (["Ana", "Bo"], [REF], "diarized_json", "known_speaker_names has 2 entries"),
        (["Ana"], [data_url(tone(1.0))], "diarized_json", "(Ana) is 1.0 s long"),
        (["Ana"], [data_url(b"RIFF....WAVEnot really")], "diarized_json", "(Ana) is not audio"),
    ],
)
def test_bad_known_speakers_get_a_400(
    api: OpenAI, server: InProcessServer, names: list[str], refs: list[str], fmt: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(api, names, refs, fmt)
    assert words in err.value.message
    assert server.engine.calls == []
    assert list((server.storage / "incoming").iterdir()) == []
    assert list((server.storage / "speakers").iterdir()) == []


def test_known_speakers_are_not_a_form_field_of_the_rest_routes(server: InProcessServer) -> None:
    with server.client() as http, open(SPEECH, "rb") as f:
        answer = http.post("/transcribe", files={"file": f}, data={"diarize": "true", "known_speakers": "Ana"})
        assert answer.status_code == 202, answer.text
        assert wait_done(http, answer.json()["job_id"])["status"] == "completed"
    _, options = server.engine.calls[-1]
    assert options.diarize and options.known_speakers == ()
