"""Completion callbacks, in process: the real app over a fake engine POSTs to
a real local receiver. Signing, the payload, retries with back-off, giving
up, and delivery state that survives a restart on the same storage. The
callback of a real transcript from a real server: tests/e2e/test_callbacks_e2e.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from whisper_mcp.server.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, UNREACHABLE, sign

from fakes import FakeEngine
from helpers import FIXTURES, CallbackReceiver, InProcessServer, wait_done

SECRET = "test-secret"


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.close()


def submit(url: str, name: str = "short.wav", **fields: str) -> dict:
    with open(FIXTURES / name, "rb") as f:
        response = httpx.post(
            f"{url}/transcribe", files={"file": (name, f)}, data={"cache": "false", **fields}, timeout=30
        )
    assert response.status_code == 202, response.text
    return response.json()


def callback_settles(url: str, job_id: str, state: str, timeout: float = 10) -> dict:
    """The job's record once its callback has reached ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        record = httpx.get(f"{url}/status/{job_id}").json()
        if record.get("callback", {}).get("state") == state:
            return record
        assert time.monotonic() < deadline, f"callback never {state}: {record}"
        time.sleep(0.02)


def test_completed_job_posts_signed_transcript(tmp_path: Path, receiver: CallbackReceiver) -> None:
    with InProcessServer.start(tmp_path / "storage", callback_secret=SECRET) as srv:
        job = submit(srv.url, callback_url=f"{receiver.url}/done")
        [(_, headers, body, _)] = receiver.wait_for("/done", 1)
        assert headers[SIGNATURE_HEADER.lower()] == sign(SECRET, body)
        assert sign(SECRET, body) != sign(SECRET + "x", body) != sign(SECRET, body + b" ")
        assert headers["content-type"] == "application/json" and headers["user-agent"] == "whisper-mcp"
        assert headers["host"] == receiver.url.removeprefix("http://")  # the URL's own name, not the vetted address
        payload = json.loads(body)
        assert payload == {
            "job_id": job["job_id"],
            "delivery_id": headers[DELIVERY_HEADER.lower()],
            "status": "completed",
            "transcript": payload["transcript"],
            "language": "en",
            "download_url": f"{srv.url}/download/{job['job_id']}",
            "status_url": f"{srv.url}/status/{job['job_id']}",
        }
        assert payload["transcript"].startswith("fake transcript of 2.4 seconds")
        assert httpx.get(payload["download_url"]).text == payload["transcript"]
        record = callback_settles(srv.url, job["job_id"], "delivered")
        assert record["callback"]["attempts"] == 1 and record["callback"]["error"] is None
        assert record["callback"]["url"] == f"{receiver.url}/done"


def test_unsigned_without_a_secret(tmp_path: Path, receiver: CallbackReceiver) -> None:
    with InProcessServer.start(tmp_path / "storage") as srv:
        submit(srv.url, callback_url=f"{receiver.url}/plain")
        [(_, headers, body, _)] = receiver.wait_for("/plain", 1)
    assert SIGNATURE_HEADER.lower() not in headers
    assert json.loads(body)["status"] == "completed"


def test_cancelled_job_posts_its_reason(tmp_path: Path, receiver: CallbackReceiver) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        try:
            blocker = submit(srv.url)
            assert engine.started.wait(10)
            job = submit(srv.url, callback_url=f"{receiver.url}/cancelled")
            assert httpx.delete(f"{srv.url}/jobs/{job['job_id']}").status_code == 200
            [(_, _, body, _)] = receiver.wait_for("/cancelled", 1)
        finally:
            engine.gate.set()
        payload = json.loads(body)
        assert payload["job_id"] == job["job_id"] and payload["status"] == "cancelled"
        assert payload["error"] and "transcript" not in payload and "download_url" not in payload
        assert payload["status_url"] == f"{srv.url}/status/{job['job_id']}"
        assert wait_done(httpx.Client(base_url=srv.url), blocker["job_id"])["status"] == "completed"


def test_failing_receiver_is_retried_with_backoff_and_never_fails_the_job(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    receiver.fail_first["/twice"] = 2
    with InProcessServer.start(
        tmp_path / "storage", callback_secret=SECRET, callback_retry_delays=(0.3, 0.6, 5)
    ) as srv:
        job = submit(srv.url, callback_url=f"{receiver.url}/twice")
        calls = receiver.wait_for("/twice", 3)
        assert len({body for _, _, body, _ in calls}) == 1  # the same body each time
        # The same delivery id on every retry, in the header and the body, to dedupe on.
        [delivery] = {headers[DELIVERY_HEADER.lower()] for _, headers, _, _ in calls}
        assert json.loads(calls[0][2])["delivery_id"] == delivery and len(delivery) == 32
        gaps = [later[3] - earlier[3] for earlier, later in zip(calls, calls[1:], strict=False)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.55, gaps  # the back-off, in order
        record = callback_settles(srv.url, job["job_id"], "delivered")
        assert record["status"] == "completed"
        assert record["callback"]["attempts"] == 3
        time.sleep(0.8)
        assert len(receiver.to("/twice")) == 3  # never repeated once delivered


def test_gives_up_after_the_last_delay(tmp_path: Path, receiver: CallbackReceiver) -> None:
    receiver.fail_first["/never"] = 100
    with InProcessServer.start(tmp_path / "storage", callback_retry_delays=(0.1, 0.1)) as srv:
        job = submit(srv.url, callback_url=f"{receiver.url}/never")
        record = callback_settles(srv.url, job["job_id"], "failed")
        assert record["status"] == "completed"
        assert record["callback"]["attempts"] == 3  # the first try and one per delay
        assert "HTTP 503" in record["callback"]["error"]
        time.sleep(0.4)
        assert len(receiver.to("/never")) == 3


def test_pending_callback_survives_a_restart_and_is_sent_once(tmp_path: Path, receiver: CallbackReceiver) -> None:
    storage = tmp_path / "storage"
    receiver.fail_first["/restart"] = 1
    with InProcessServer.start(storage, callback_retry_delays=(1.5, 1.5)) as first:
        job = submit(first.url, callback_url=f"{receiver.url}/restart")
        receiver.wait_for("/restart", 1)  # the first attempt failed; the retry is 1.5 s away
        record = callback_settles(first.url, job["job_id"], "pending")
        deadline = time.monotonic() + 5
        while record["callback"]["attempts"] < 1:  # the failed attempt is recorded
            assert time.monotonic() < deadline, record
            time.sleep(0.02)
            record = httpx.get(f"{first.url}/status/{job['job_id']}").json()
    assert len(receiver.to("/restart")) == 1  # stopped before the retry was due
    with InProcessServer.start(storage, callback_retry_delays=(1.5, 1.5)) as second:
        calls = receiver.wait_for("/restart", 2)
        assert json.loads(calls[1][2])["job_id"] == job["job_id"]
        assert calls[0][1][DELIVERY_HEADER.lower()] == calls[1][1][DELIVERY_HEADER.lower()]  # across the restart
        record = callback_settles(second.url, job["job_id"], "delivered")
        assert record["callback"]["attempts"] == 2
        assert second.engine.batches == []  # the job itself was not run again
    with InProcessServer.start(storage) as third:
        time.sleep(0.5)
        assert httpx.get(f"{third.url}/status/{job['job_id']}").json()["callback"]["state"] == "delivered"
    assert len(receiver.to("/restart")) == 2  # not repeated after delivery


def test_unreachable_receiver_does_not_fail_the_job(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", callback_retry_delays=(30,)) as srv:
        job = submit(srv.url, callback_url="http://127.0.0.1:9/unreachable")
        deadline = time.monotonic() + 10
        record = wait_done(httpx.Client(base_url=srv.url), job["job_id"])
        while record["callback"]["attempts"] < 1:
            assert time.monotonic() < deadline, record
            time.sleep(0.05)
            record = httpx.get(f"{srv.url}/status/{job['job_id']}").json()
    assert record["status"] == "completed"
    assert record["callback"]["state"] == "pending"
    assert record["callback"]["error"] == UNREACHABLE


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http://"])
def test_bad_callback_url_is_refused_up_front(fake_server: InProcessServer, url: str) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        response = httpx.post(
            f"{fake_server.url}/transcribe", files={"file": ("short.wav", f)}, data={"callback_url": url}
        )
    assert response.status_code == 400
    assert "callback_url must be an http:// or https:// URL" in response.json()["error"]["message"]
    assert fake_server.engine.batches == []
