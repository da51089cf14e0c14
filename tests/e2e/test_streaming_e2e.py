"""Text as the real model decodes it, against the real server: the official
``openai`` SDK's ``stream=True`` on a long recording, a processing job's
partial transcript, and verbose_json's per-segment figures. Route behaviour
(events, hang-ups, MCP) is tested in process in tests/unit/test_streaming.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, submit, wait_done, words

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def test_sdk_stream_prints_text_while_a_long_file_decodes(api: OpenAI, client: httpx.Client) -> None:
    with open(LONG_AUDIO, "rb") as f:
        # A prompt of its own: other tests' transcripts of this file are not reused.
        stream = api.audio.transcriptions.create(
            model="whisper-1", file=f, stream=True, prompt="The weekly planning meeting."
        )
    job_id = stream.response.headers["x-whisper-job-id"]
    deltas: list[str] = []
    status_at_first_delta = None
    done = None
    for item in stream:
        if item.type == "transcript.text.delta":
            if not deltas:
                status_at_first_delta = client.get(f"/status/{job_id}").json()
            deltas.append(item.delta)
        elif item.type == "transcript.text.done":
            done = item
    # The first text came in the first half of the job: less than half of the
    # audio was decoded when it arrived (fraction decoded, not wall time).
    assert status_at_first_delta is not None and status_at_first_delta["status"] == "processing"
    assert status_at_first_delta["progress"] < 0.5, status_at_first_delta
    assert done is not None and len(deltas) > 1
    assert "".join(deltas) == done.text
    final = client.get(f"/download/{job_id}").text
    assert done.text.split() == final.split()
    assert {"morning", "budget", "river"} <= words(done.text), done.text
    assert done.usage is None  # OpenAI's schema has only token counts for this event


def test_partial_transcript_grows_while_a_long_file_decodes(client: httpx.Client) -> None:
    job = submit(client, LONG_AUDIO, cache="false")
    seen: list[int] = []
    texts: list[str] = []
    deadline = time.monotonic() + 300
    while True:
        record = client.get(f"/status/{job['job_id']}").json()
        if record["status"] != "processing" and record["status"] != "queued":
            break
        if record["status"] == "processing" and (not seen or record["segments_done"] != seen[-1]):
            seen.append(record["segments_done"])
            texts.append(record["partial_transcript"])
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    assert record["status"] == "completed", record
    grown = [n for n in seen if n > 0]
    assert grown, seen  # some text was readable before the job ended
    assert seen == sorted(seen)
    # Each partial transcript continues the one before, and the final one.
    for earlier, later in zip(texts, texts[1:], strict=False):
        assert later.startswith(earlier)
    assert record["transcript"].split()[: len(texts[-1].split())] == texts[-1].split()


def test_verbose_json_has_the_decoders_figures(api: OpenAI) -> None:
    with open(LONG_AUDIO, "rb") as f:
        result = api.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    body = result.model_dump()
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(body["duration"], abs=1)}
    segments = body["segments"]
    assert len(segments) > 3
    for s in segments:
        assert -5.0 < s["avg_logprob"] <= 0.0, s
        assert 0.0 <= s["no_speech_prob"] <= 1.0, s
        assert 0.0 < s["compression_ratio"] < 10.0, s
        assert 0.0 <= s["temperature"] <= 1.0, s
        assert s["tokens"] and all(isinstance(t, int) for t in s["tokens"]), s
        # seek: the window's start in 10 ms mel frames, at or before the segment.
        assert 0 <= s["seek"] / 100 <= s["start"] + 0.01, s
    # Real figures, per window: not one placeholder value for all.
    assert len({s["seek"] for s in segments}) > 1
    assert len({s["avg_logprob"] for s in segments}) > 1
    assert len({s["no_speech_prob"] for s in segments}) > 1


def test_json_download_carries_the_segment_figures(client: httpx.Client) -> None:
    job = submit(client, FIXTURES / "speech.wav")
    wait_done(client, job["job_id"])
    result = client.get(f"/download/{job['job_id']}", params={"format": "json"}).json()
    for s in result["segments"]:
        assert {"avg_logprob", "compression_ratio", "no_speech_prob", "temperature", "tokens", "seek"} <= set(s)
