"""/v1/realtime in process, over the fake engine: protocol errors leave the
socket open, a committed utterance's deltas make its transcript, the session
is kept as a job (with its audio as a WAV at store=audio, until the job
expires), and handshakes are refused without the token, from a
foreign Origin, or beyond --max-realtime-sessions."""

from __future__ import annotations

import base64
import io
import json
import math
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.server.live import default_max_sessions
from whisper_mcp.server.live_recording import pcm16
from whisper_mcp.server.realtime import protocol
from whisper_mcp.server.realtime.audio import Decoder

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, submit

SECOND = bytes(48000)  # one second of PCM16 at 24 kHz (silence: the fake engine hears anything)


def url(server: InProcessServer, query: str = "intent=transcription") -> str:
    return server.url.replace("http://", "ws://") + "/v1/realtime?" + query


def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=10))


def send(ws: ClientConnection, **event: Any) -> None:
    ws.send(json.dumps(event))


def append(ws: ClientConnection, data: bytes) -> None:
    send(ws, type="input_audio_buffer.append", audio=base64.b64encode(data).decode())


def until(ws: ClientConnection, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The next event of type ``kind``, and those before it."""
    seen = []
    while (event := recv(ws))["type"] != kind:
        seen.append(event)
    return event, seen


def kept_job(http: httpx.Client) -> dict[str, Any]:
    """The newest job, once its session has ended and it completed."""
    deadline = time.monotonic() + 10
    while (jobs := http.get("/jobs").json()["jobs"]) == [] or jobs[0]["status"] != "completed":
        assert time.monotonic() < deadline, jobs
        time.sleep(0.02)
    return jobs[0]


def one_utterance(ws: ClientConnection, audio: bytes) -> None:
    """Send ``audio`` in 100 ms appends (cut mid-sample: odd sizes), commit it, wait for its transcript."""
    recv(ws)
    send(ws, type="transcription_session.update", session={"turn_detection": None})
    recv(ws)
    for i in range(0, len(audio), 4801):
        append(ws, audio[i : i + 4801])
    send(ws, type="input_audio_buffer.commit")
    until(ws, "conversation.item.input_audio_transcription.completed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage") as srv:
        yield srv


def test_protocol_errors_say_why_and_the_socket_stays_open(server: InProcessServer) -> None:
    with connect(url(server), subprotocols=["realtime"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"  # as browsers offer it
        assert recv(ws)["type"] == "session.created"
        ws.send("{not json")
        assert recv(ws)["error"]["code"] == "invalid_json"
        send(ws, type="response.create", event_id="ev_1")
        error = recv(ws)["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_event_type", "type", "ev_1")
        send(
            ws,
            type="session.update",
            event_id="ev_2",
            session={"type": "transcription", "audio": {"input": {"voice": "x"}}},
        )
        error = recv(ws)["error"]
        assert (error["param"], error["event_id"]) == ("session.audio.input.voice", "ev_2")
        send(
            ws,
            type="session.update",
            session={"type": "transcription", "audio": {"input": {"transcription": {"model": "nope"}}}},
        )
        error = recv(ws)["error"]
        assert error["code"] == "unknown_model" and "nope" in error["message"]
        send(ws, type="input_audio_buffer.commit")
        assert recv(ws)["error"]["code"] == "input_audio_buffer_commit_empty"
        send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        updated = recv(ws)
        assert updated["type"] == "session.updated" and updated["session"]["audio"]["input"]["turn_detection"] is None


def test_plain_http_is_told_to_upgrade(server: InProcessServer) -> None:
    with server.client() as http:
        answer = http.get("/v1/realtime")
    assert answer.status_code == 426 and answer.json()["error"]["code"] == "upgrade_required"


def test_a_committed_utterance_streams_deltas_and_is_kept(server: InProcessServer) -> None:
    with connect(url(server)) as ws:
        recv(ws)
        send(ws, type="transcription_session.update", session={"turn_detection": None})
        assert recv(ws)["type"] == "transcription_session.updated"
        decodes = len(server.engine.calls)
        append(ws, SECOND)
        deadline = time.monotonic() + 10  # its first decode: no event, it has nothing to agree with yet
        while len(server.engine.calls) == decodes:
            assert time.monotonic() < deadline, "no decode of the first second"
            time.sleep(0.01)
        append(ws, SECOND)
        delta, _ = until(ws, "conversation.item.input_audio_transcription.delta")
        assert delta["delta"] == "fake transcript of"  # what the decodes of 1 s and 2 s agree on
        append(ws, SECOND)
        send(ws, type="input_audio_buffer.commit")
        committed, _ = until(ws, "input_audio_buffer.committed")
        assert committed["item_id"] == delta["item_id"] and committed["previous_item_id"] is None
        completed, rest = until(ws, "conversation.item.input_audio_transcription.completed")
        deltas = [delta["delta"], *(e["delta"] for e in rest if e["type"].endswith(".delta"))]
        assert "".join(deltas) == completed["transcript"] == "fake transcript of 3.0 seconds"
        assert completed["usage"] == {"type": "duration", "seconds": 3.0}
        # Greedy guesses until the first words (the decodes of 1 s and 2 s); then, and at commit, the default beam.
        beams = [options.beam_size for _, options in server.engine.calls]
        assert beams[:2] == [1, 1] and set(beams[2:]) == {None}
        with server.client() as http:  # kept as it goes: a running job with the utterance so far
            deadline = time.monotonic() + 10
            while not (jobs := http.get("/jobs").json()["jobs"]) or not (
                running := http.get(f"/jobs/{jobs[0]['job_id']}").json()
            ).get("partial_transcript"):
                assert time.monotonic() < deadline, jobs
                time.sleep(0.02)
            assert running["status"] == "processing" and running["partial_transcript"] == completed["transcript"]
        append(ws, SECOND)
        send(ws, type="input_audio_buffer.clear")
        until(ws, "input_audio_buffer.cleared")
        send(ws, type="input_audio_buffer.commit")
        assert recv(ws)["error"]["code"] == "input_audio_buffer_commit_empty"
    with server.client() as http:
        job = kept_job(http)
        srt = http.get(f"/download/{job['job_id']}", params={"format": "srt"}).text
    assert srt.strip() == "1\n00:00:00,000 --> 00:00:03,000\nfake transcript of 3.0 seconds"


def test_health_and_metrics_count_sessions_and_utterances(server: InProcessServer) -> None:
    with connect(url(server, "intent=transcription&store=false")) as ws, server.client() as http:
        recv(ws)
        health = http.get("/health").json()
        assert (health["realtime_sessions"], health["max_realtime_sessions"]) == (1, default_max_sessions())
        send(ws, type="transcription_session.update", session={"turn_detection": None})
        append(ws, SECOND)
        send(ws, type="input_audio_buffer.commit")
        until(ws, "conversation.item.input_audio_transcription.completed")
        metrics = http.get("/metrics").text
        assert "whisper_mcp_realtime_sessions 1.0" in metrics
        assert 'whisper_mcp_realtime_utterances_total{status="completed"} 1.0' in metrics
        assert "whisper_mcp_realtime_latency_seconds_count 1.0" in metrics
    with server.client() as http:
        deadline = time.monotonic() + 10
        while http.get("/health").json()["realtime_sessions"] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "whisper_mcp_realtime_sessions 0.0" in http.get("/metrics").text


def test_a_session_naming_no_language_keeps_to_the_one_identified(tmp_path: Path) -> None:
    engine = FakeEngine(detected=("es", 0.95))
    with InProcessServer.start(tmp_path / "storage", engine) as server, connect(url(server)) as ws:
        recv(ws)
        send(ws, type="transcription_session.update", session={"turn_detection": None})
        recv(ws)
        for seconds in (3, 1):  # identified in the first; the second is decoded in that language
            append(ws, SECOND * seconds)
            send(ws, type="input_audio_buffer.commit")
            completed, _ = until(ws, "conversation.item.input_audio_transcription.completed")
            assert completed["languages"] == [{"code": "es"}]
        first, last = engine.calls[0], engine.calls[-1]
        assert (first[1].identify_with, first[1].reroute, first[1].language) == ("base", True, None)
        assert (last[0], last[1].identify_with, last[1].language) == ("base", None, "es")


def test_store_false_keeps_nothing(server: InProcessServer) -> None:
    with connect(url(server, "intent=transcription&store=false")) as ws:
        one_utterance(ws, SECOND)
    with server.client() as http:
        assert http.get("/jobs").json()["total"] == 0


def test_store_audio_keeps_the_sessions_audio_as_a_wav_until_the_job_expires(server: InProcessServer) -> None:
    tone = (np.sin(np.arange(int(2.5 * 24000)) * 0.05) * 12000).astype("<i2").tobytes()  # 2.5 s at 24 kHz
    with connect(url(server, "intent=transcription&store=audio")) as ws:
        one_utterance(ws, tone)
    with server.client() as http:
        job = kept_job(http)
        answer = http.get(f"/download/{job['job_id']}", params={"format": "wav"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    assert answer.headers["content-disposition"] == f'attachment; filename="{job["job_id"]}.wav"'
    with wave.open(io.BytesIO(answer.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        kept = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int32)
    # What the session heard: the same bytes through its decoder (24 -> 16 kHz), as 16-bit samples.
    heard = np.frombuffer(pcm16(Decoder("pcm16").push(tone)), "<i2").astype(np.int32)
    assert len(kept) == len(heard) == pytest.approx(2.5 * 16000, abs=2)
    assert np.abs(kept - heard).max() <= 1  # rounding apart
    stored = server.service.queue.get(job["job_id"])
    assert stored is not None
    recording = server.storage / "recordings" / f"{stored.key}.wav"
    assert recording.is_file() and not list((server.storage / "incoming").iterdir())  # the scratch file became it
    assert server.service.queue.expire(time.time() + 1) == 1
    assert not recording.exists()


def test_audio_kept_with_no_utterance_is_a_job_of_its_own(server: InProcessServer) -> None:
    with connect(url(server, "intent=transcription&store=audio")) as ws:
        recv(ws)
        append(ws, SECOND)  # silence, by server VAD: never an utterance
        send(ws, type="input_audio_buffer.clear")
        until(ws, "input_audio_buffer.cleared")
    with server.client() as http:
        job = kept_job(http)
        assert http.get(f"/download/{job['job_id']}").text == ""
        answer = http.get(f"/download/{job['job_id']}", params={"format": "wav"})
    with wave.open(io.BytesIO(answer.content)) as wav:
        assert wav.getnframes() == pytest.approx(16000, abs=2)


def test_a_session_kept_without_its_audio_says_so(server: InProcessServer) -> None:
    with connect(url(server, "intent=transcription&store=true")) as ws:
        one_utterance(ws, SECOND)
    with server.client() as http:
        job = kept_job(http)
        answer = http.get(f"/download/{job['job_id']}", params={"format": "wav"})
        assert answer.status_code == 404
        error = answer.json()["error"]
        assert error["code"] == "no_recording" and "store=audio" in error["message"]
        assert http.get(f"/download/{job['job_id']}", params={"format": "txt"}).text  # its transcript is there
    assert not list((server.storage / "recordings").iterdir())


def test_a_bad_store_value_is_refused_in_words(server: InProcessServer) -> None:
    with connect(url(server, "intent=transcription&store=everything")) as ws:
        error = recv(ws)["error"]
        assert error["param"] == "store" and "true" in error["message"] and "audio" in error["message"]
        assert "'everything'" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_logprobs_come_with_each_word_when_included(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", FakeEngine(words=True)) as server, connect(url(server)) as ws:
        recv(ws)
        session = {
            "type": "transcription",
            "include": [protocol.LOGPROBS],
            "audio": {"input": {"turn_detection": None}},
        }
        send(ws, type="session.update", session=session)
        assert recv(ws)["session"]["include"] == [protocol.LOGPROBS]
        append(ws, SECOND)
        send(ws, type="input_audio_buffer.commit")
        completed, before = until(ws, "conversation.item.input_audio_transcription.completed")
    deltas = [e for e in before if e["type"].endswith(".delta")]
    assert [p["token"] for d in deltas for p in d["logprobs"]] == completed["transcript"].split()
    assert completed["logprobs"][0] == {
        "token": "fake",
        "logprob": pytest.approx(math.log(0.9)),
        "bytes": list(b"fake"),
    }


class SlowFiles(FakeEngine):
    """Files take 0.2 s a window; live decodes (no progress callback) are instant."""

    def _transcribe(self, item: BatchItem, options: TranscribeOptions) -> Transcription:
        if item.on_progress is None:
            return Transcription("live words", "en", item.duration_hint)
        return super()._transcribe(item, options)


def test_a_live_utterance_does_not_wait_for_a_long_file(tmp_path: Path) -> None:
    engine = SlowFiles(windows=40, window_seconds=0.2)  # an 8 s job
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as http:
        job = submit(http, FIXTURES / "short.wav")
        assert engine.started.wait(10)
        with connect(url(server, "intent=transcription&store=false")) as ws:
            recv(ws)
            send(ws, type="transcription_session.update", session={"turn_detection": None})
            recv(ws)
            append(ws, SECOND)
            started = time.monotonic()
            send(ws, type="input_audio_buffer.commit")
            completed, _ = until(ws, "conversation.item.input_audio_transcription.completed")
            waited = time.monotonic() - started
        assert completed["transcript"] == "live words"
        assert waited < 2.0  # a window or two of the file's, not its 8 s
        assert http.get(f"/jobs/{job['job_id']}").json()["status"] == "processing"  # the file goes on
        assert server.service.worker.gate.batch_yields >= 1


def test_handshakes_are_refused_without_the_token_from_a_foreign_origin_and_beyond_the_limit(tmp_path: Path) -> None:
    token = {"Authorization": "Bearer s3cret"}
    with InProcessServer.start(tmp_path / "storage", token="s3cret", max_realtime_sessions=1) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(url(server))
        assert refused.value.response.status_code == 401
        assert b"bearer token" in refused.value.response.body
        with pytest.raises(InvalidStatus) as refused:
            connect(url(server), additional_headers={**token, "Origin": "https://evil.example"})
        assert refused.value.response.status_code == 403
        with connect(url(server), additional_headers=token) as first:
            assert recv(first)["type"] == "session.created"
            with connect(url(server), additional_headers=token) as second:
                error = recv(second)["error"]
                assert error["code"] == "session_limit_reached" and "--max-realtime-sessions" in error["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    second.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
