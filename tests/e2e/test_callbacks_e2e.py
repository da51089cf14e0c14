"""Completion callbacks to a real local receiver, signed with HMAC-SHA256."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from helpers import FIXTURES, ServerProcess, wait_done, words
from whisper_mcp.server.callbacks import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.e2e

SECRET = "test-secret"


class Receiver:
    """An HTTP server that records callback POSTs and fails the first ``fail_first`` per path."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append((self.path, dict(self.headers), body))
                failures = receiver.fail_first.get(self.path, 0)
                if failures > 0:
                    receiver.fail_first[self.path] = failures - 1
                    self.send_response(503)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[tuple[str, dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = [c for c in self.calls if c[0] == path]
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.calls)} calls in {timeout}s")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("callbacks")
    srv = ServerProcess(
        root / "storage", root / "server.log", "--callback-secret", SECRET, "--callback-retry-delays", "0.5,1,1"
    ).start()
    yield srv
    srv.stop()


def submit(url: str, name: str, **fields: str) -> dict:
    with open(FIXTURES / name, "rb") as f:
        response = httpx.post(f"{url}/transcribe", files={"file": (name, f)}, data={"cache": "false", **fields}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def test_completed_job_posts_signed_transcript(signed_server: ServerProcess, receiver: Receiver) -> None:
    job = submit(signed_server.url, "short.wav", callback_url=f"{receiver.url}/done")
    [(_, headers, body)] = receiver.wait_for("/done", 1)
    assert headers[SIGNATURE_HEADER] == sign(SECRET, body)
    payload = json.loads(body)
    assert payload["job_id"] == job["job_id"]
    assert payload["status"] == "completed"
    assert {"hello", "world"} <= words(payload["transcript"])
    assert payload["download_url"] == f"{signed_server.url}/download/{job['job_id']}"
    assert httpx.get(payload["download_url"]).text == payload["transcript"]
    with httpx.Client(base_url=signed_server.url) as client:
        record = wait_done(client, job["job_id"])
        deadline = time.monotonic() + 5
        while record["callback"]["state"] != "delivered" and time.monotonic() < deadline:
            record = client.get(f"/status/{job['job_id']}").json()
    assert record["callback"]["state"] == "delivered"
    assert record["callback"]["attempts"] == 1


def test_failing_receiver_is_retried_and_never_fails_the_job(
    signed_server: ServerProcess, receiver: Receiver
) -> None:
    receiver.fail_first["/twice"] = 2
    job = submit(signed_server.url, "short.wav", callback_url=f"{receiver.url}/twice")
    calls = receiver.wait_for("/twice", 3, timeout=30)
    assert len({body for _, _, body in calls}) == 1  # the same body each time
    with httpx.Client(base_url=signed_server.url) as client:
        record = wait_done(client, job["job_id"])
        deadline = time.monotonic() + 5
        while record["callback"]["state"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
            record = client.get(f"/status/{job['job_id']}").json()
    assert record["status"] == "completed"
    assert record["callback"]["state"] == "delivered" and record["callback"]["attempts"] == 3
    time.sleep(1.5)
    assert len([c for c in receiver.calls if c[0] == "/twice"]) == 3  # never repeated once delivered


def test_pending_callback_survives_a_restart_and_is_sent_once(receiver: Receiver, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    receiver.fail_first["/restart"] = 1
    first = ServerProcess(storage, tmp_path / "first.log", "--callback-retry-delays", "3,3").start()
    try:
        job = submit(first.url, "short.wav", callback_url=f"{receiver.url}/restart")
        receiver.wait_for("/restart", 1)  # the first attempt failed; the retry is 3 s away
        time.sleep(0.3)  # let the failed attempt be recorded
    finally:
        first.kill()
    second = ServerProcess(storage, tmp_path / "second.log", "--callback-retry-delays", "3,3").start()
    try:
        calls = receiver.wait_for("/restart", 2, timeout=30)
        assert json.loads(calls[1][2])["job_id"] == job["job_id"]
        deadline = time.monotonic() + 5
        record = httpx.get(f"{second.url}/status/{job['job_id']}").json()
        while record["callback"]["state"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
            record = httpx.get(f"{second.url}/status/{job['job_id']}").json()
        assert record["callback"] == {**record["callback"], "state": "delivered", "attempts": 2}
    finally:
        second.stop()
    third = ServerProcess(storage, tmp_path / "third.log").start()
    try:
        time.sleep(1.0)
        assert len([c for c in receiver.calls if c[0] == "/restart"]) == 2  # not repeated after delivery
    finally:
        third.stop()


def test_unreachable_receiver_does_not_fail_the_job(signed_server: ServerProcess, tmp_path: Path) -> None:
    job = submit(signed_server.url, "short.wav", callback_url="http://127.0.0.1:9/unreachable")
    with httpx.Client(base_url=signed_server.url) as client:
        record = wait_done(client, job["job_id"])
        assert record["status"] == "completed"
        deadline = time.monotonic() + 10
        while record["callback"]["attempts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            record = client.get(f"/status/{job['job_id']}").json()
    assert record["callback"]["state"] == "pending"
    assert "ConnectError" in record["callback"]["error"]
