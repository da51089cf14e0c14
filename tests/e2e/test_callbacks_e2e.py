"""A completion callback from a real server to a real local receiver, carrying
what the real model heard. Signing, retries, back-off, giving up and restarts:
tests/unit/test_callbacks.py (in process, over a fake engine)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from helpers import FIXTURES, CallbackReceiver, ServerProcess, wait_done, words

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
