"""A completion callback from a real server to a real local receiver, carrying
what the real model heard; and receivers that answer a gigabyte, or a gzip
bomb, which the real server process delivers to without growing. Signing,
retries, back-off, giving up and restarts: tests/unit/test_callbacks.py (in
process, over a fake engine)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from big_answers import GROWTH_BOUND, MiB, PeakMemory, big_answer
from helpers import FIXTURES, CallbackReceiver, ServerProcess, submit, wait_done, words

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.close()


def test_completed_job_posts_its_transcript(server: ServerProcess, receiver: CallbackReceiver) -> None:
    url = receiver.url
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            response = client.post(
                "/transcribe", files={"file": ("short.wav", f)}, data={"cache": "false", "callback_url": f"{url}/done"}
            )
        assert response.status_code == 202, response.text
        job = response.json()
        record = wait_done(client, job["job_id"])
        deadline = time.monotonic() + 15
        while record["callback"]["state"] != "delivered":
            assert time.monotonic() < deadline, record
            time.sleep(0.05)
            record = client.get(f"/status/{job['job_id']}").json()
        assert record["callback"]["attempts"] == 1
        [payload] = receiver.bodies()
        assert payload["job_id"] == job["job_id"] and payload["status"] == "completed"
        assert {"hello", "world"} <= words(payload["transcript"])
        assert payload["download_url"] == f"{server.url}/download/{job['job_id']}"
        assert client.get(payload["download_url"]).text == payload["transcript"]


@pytest.mark.parametrize("answer", ["huge", "bomb"])
def test_a_huge_or_compressed_answer_costs_the_server_process_no_memory(server: ServerProcess, answer: str) -> None:
    """The receiver answers the first attempt 503, and the retry (a second
    later, the job's transcription long done) with 1 GiB, or a gzip bomb of
    2 GiB: the server process delivers it at once, and its memory over the
    retry grows by no more than a few network reads."""
    receiver = big_answer(answer, fail_first=1)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            job_id = submit(client, FIXTURES / "short.wav", callback_url=f"{receiver.url}/{answer}")["job_id"]
            record = wait_done(client, job_id)
            deadline = time.monotonic() + 15
            while record["callback"]["attempts"] < 1:
                assert time.monotonic() < deadline, record
                time.sleep(0.01)
                record = client.get(f"/status/{job_id}").json()
            with PeakMemory(server.pid) as memory:
                while record["callback"]["state"] != "delivered":
                    assert time.monotonic() < deadline, record
                    time.sleep(0.01)
                    record = client.get(f"/status/{job_id}").json()
    finally:
        receiver.close()
    grew = memory.peak - memory.start
    assert grew < GROWTH_BOUND, f"the server grew by {grew / MiB:.0f} MiB"
    assert record["callback"]["attempts"] == 2 and record["callback"]["error"] is None
    assert [h["accept-encoding"] for h in receiver.requests] == ["identity", "identity"]
    assert receiver.sent[-1] < 64 * MiB  # cut off, not read to the end
