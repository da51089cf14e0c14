"""Where the running server sends callbacks, in process over a fake engine:
refusals at submission on every route that takes a callback_url, DNS
rebinding caught before delivery, one error text for every unreachable
receiver, concurrent delivery, and URL credentials kept out of answers and
logs. Every connection stays on loopback; names are resolved by a resolver
the test injects. The policy alone: tests/unit/test_callback_policy.py."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError

from whisper_mcp.server.callbacks import DELIVERY_HEADER, REBOUND, UNREACHABLE
from whisper_mcp.server.egress import CallbackPolicy

from helpers import FIXTURES, CallbackReceiver, InProcessServer, free_port, wait_done


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.close()


class Turns:
    """Resolves each name to its answers in turn (the last repeats); an
    empty answer is a failed look-up."""

    def __init__(self, **names: list[list[str]]) -> None:
        self.names = {name.replace("_", "."): answers for name, answers in names.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        answers = self.names.get(host, [[]])
        answer = answers[min(self.asked.count(host) - 1, len(answers) - 1)]
        if not answer:
            raise OSError(f"no such host {host}")
        return answer


def post(url: str, **fields: str) -> httpx.Response:
    with open(FIXTURES / "short.wav", "rb") as f:
        return httpx.post(f"{url}/transcribe", files={"file": ("short.wav", f)}, data={"cache": "false", **fields})


def submit(url: str, **fields: str) -> dict:
    response = post(url, **fields)
    assert response.status_code == 202, response.text
    return response.json()


def settled(url: str, job_id: str, timeout: float = 15) -> dict:
    """The job's record once its callback has been attempted at least once."""
    deadline = time.monotonic() + timeout
    record = wait_done(httpx.Client(base_url=url), job_id)
    while record["callback"]["attempts"] < 1:
        assert time.monotonic() < deadline, record
        time.sleep(0.02)
        record = httpx.get(f"{url}/status/{job_id}").json()
    return record


METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def test_metadata_callback_is_refused_at_submission_on_every_route(fake_server: InProcessServer) -> None:
    response = post(fake_server.url, callback_url=METADATA)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "callback_refused"
    assert "169.254.169.254 is a link-local, cloud-metadata" in error["message"]
    assert httpx.get(f"{fake_server.url}/jobs").json()["total"] == 0

    async def over_mcp() -> None:
        audio = base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()
        async with Client(StreamableHttpTransport(f"{fake_server.url}/mcp")) as mcp:
            with pytest.raises(ToolError, match="never go there"):
                await mcp.call_tool("transcribe_wav", {"audio_base64": audio, "callback_url": METADATA})
            with pytest.raises(ToolError, match="never go there"):
                await mcp.call_tool("create_upload_url", {"callback_url": "http://[fd00:ec2::254]/"})

    import anyio

    anyio.run(over_mcp)
    assert fake_server.engine.batches == []


def test_loopback_needs_an_allowance_when_the_server_does_not_listen_on_loopback(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    # Settings.host only decides the policy here: the test server listens on loopback anyway.
    public = {"host": "192.0.2.10", "public_url": "http://192.0.2.10:8765"}
    with InProcessServer.start(tmp_path / "a", **public) as srv:
        for spelling in ("127.0.0.1", "127.1", "2130706433", "0x7f000001", "localhost"):
            port = receiver.url.rpartition(":")[2]
            response = post(srv.url, callback_url=f"http://{spelling}:{port}/x")
            assert response.status_code == 400, (spelling, response.text)
            assert "--callback-allow" in response.json()["error"]["message"], spelling
    with InProcessServer.start(tmp_path / "b", callback_allow=("127.0.0.0/8",), **public) as srv:
        submit(srv.url, callback_url=f"{receiver.url}/allowed")
        receiver.wait_for("/allowed", 1)
    assert receiver.to("/x") == []


# IPv6 forms of link-local, loopback, private and site-local addresses that
# carried a callback past an earlier policy.
IPV6_FORMS = [
    "http://[::a9fe:a9fe]/latest/meta-data/",
    "http://[::169.254.169.254]/latest/meta-data/",
    "http://[::ffff:0:a9fe:a9fe]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://[::7f00:1]:8765/",
    "http://[::a00:1]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[fec0::1]/",
]


def test_ipv6_forms_of_internal_addresses_are_refused_at_submission(tmp_path: Path) -> None:
    public = {"host": "192.0.2.10", "public_url": "http://192.0.2.10:8765"}
    with InProcessServer.start(tmp_path / "storage", **public) as srv:
        for url in IPV6_FORMS:
            response = post(srv.url, callback_url=url)
            assert response.status_code == 400, (url, response.text)
            assert response.json()["error"]["code"] == "callback_refused", url
        assert httpx.get(f"{srv.url}/jobs").json()["total"] == 0
    assert srv.engine.batches == []


def test_a_refused_name_gets_one_answer_and_the_log_says_why(
    fake_server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether a name does not resolve or resolves to a refused address, the
    client reads the same 400, so it cannot probe internal names; the
    server's log tells them apart."""
    caplog.set_level(logging.INFO, logger="whisper_mcp.server.callbacks")
    names = Turns(private_test=[["10.0.0.7"]], metadata_test=[["169.254.169.254"]], loop_test=[["127.0.0.1"]])
    fake_server.service.callbacks.policy = CallbackPolicy(resolver=names)
    answers = set()
    for host in ("private.test", "metadata.test", "loop.test", "absent.test"):
        response = post(fake_server.url, callback_url=f"http://{host}/cb?token=t0k")
        assert response.status_code == 400, (host, response.text)
        answers.add(response.json()["error"]["message"].replace(host, "HOST"))
    [answer] = answers
    assert "does not resolve here to an address callbacks may go to" in answer
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for detail in (
        "private.test resolves to 10.0.0.7, a private or internal address",
        "metadata.test resolves to 169.254.169.254, a link-local, cloud-metadata",
        "loop.test resolves to 127.0.0.1, a loopback address",
        "absent.test does not resolve to an address",
    ):
        assert detail in logged
    assert "t0k" not in logged


def test_delivery_connects_to_the_vetted_address_under_the_urls_name(
    fake_server: InProcessServer, receiver: CallbackReceiver
) -> None:
    names = Turns(receiver_test=[["127.0.0.1"]])
    fake_server.service.callbacks.policy = CallbackPolicy(allow_loopback=True, resolver=names)
    port = receiver.url.rpartition(":")[2]
    submit(fake_server.url, callback_url=f"http://receiver.test:{port}/named")
    [(_, headers, _, _)] = receiver.wait_for("/named", 1)
    assert headers["host"] == f"receiver.test:{port}"
    assert names.asked == ["receiver.test", "receiver.test"]  # at submission, and again to connect


def test_a_name_rebound_to_the_metadata_address_gets_no_callback(
    fake_server: InProcessServer, receiver: CallbackReceiver
) -> None:
    names = Turns(rebind_test=[["127.0.0.1"], ["169.254.169.254"]])
    fake_server.service.callbacks.policy = CallbackPolicy(allow_loopback=True, resolver=names)
    port = receiver.url.rpartition(":")[2]
    job = submit(fake_server.url, callback_url=f"http://rebind.test:{port}/rebound")
    record = settled(fake_server.url, job["job_id"])
    assert record["callback"]["error"] == REBOUND
    assert receiver.calls == []


def test_every_unreachable_receiver_gets_the_same_error(tmp_path: Path) -> None:
    """A closed port, a port that hangs up without answering, and a name that
    stops resolving read the same, so callbacks cannot map ports."""
    hang_up = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = hang_up.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    names = Turns(gone_test=[["127.0.0.1"], []])
    try:
        with InProcessServer.start(tmp_path / "storage", callback_retry_delays=(60,)) as srv:
            srv.service.callbacks.policy = CallbackPolicy(allow_loopback=True, resolver=names)
            urls = [
                f"http://127.0.0.1:{free_port()}/closed",
                f"http://127.0.0.1:{hang_up.getsockname()[1]}/open",
                f"http://gone.test:{free_port()}/dns",
            ]
            jobs = [submit(srv.url, callback_url=url) for url in urls]
            errors = [settled(srv.url, job["job_id"])["callback"]["error"] for job in jobs]
    finally:
        hang_up.close()
    assert errors == [UNREACHABLE] * 3


def test_a_slow_receiver_does_not_hold_up_another_jobs_callback(tmp_path: Path) -> None:
    slow, fast = CallbackReceiver(delay=2.0), CallbackReceiver()
    try:
        with InProcessServer.start(tmp_path / "storage") as srv:
            for i in range(6):
                submit(srv.url, callback_url=f"{slow.url}/slow{i}")
            submit(srv.url, callback_url=f"{fast.url}/fast")
            [(_, _, _, fast_arrival)] = fast.wait_for("/fast", 1)
            slow_arrivals = [slow.wait_for(f"/slow{i}", 1)[0][3] for i in range(6)]
        assert fast_arrival < min(slow_arrivals)  # answered while all six were still waiting
    finally:
        slow.close()
        fast.close()


def test_the_pool_is_bounded(tmp_path: Path) -> None:
    """With one delivery at a time, a later job's callback waits for the slow one."""
    slow, fast = CallbackReceiver(delay=1.0), CallbackReceiver()
    try:
        with InProcessServer.start(tmp_path / "storage", callback_concurrency=1) as srv:
            first = submit(srv.url, callback_url=f"{slow.url}/slow")
            wait_done(httpx.Client(base_url=srv.url), first["job_id"])
            submit(srv.url, callback_url=f"{fast.url}/fast")
            [(_, _, _, fast_arrival)] = fast.wait_for("/fast", 1)
            [(_, _, _, slow_arrival)] = slow.wait_for("/slow", 1)
        assert slow_arrival < fast_arrival
    finally:
        slow.close()
        fast.close()


def test_callback_credentials_stay_out_of_answers_and_logs(
    fake_server: InProcessServer, receiver: CallbackReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = receiver.url.removeprefix("http://")
    job = submit(fake_server.url, callback_url=f"http://hook-user:hunter2@{host}/cred?token=tok-secret&job=7")
    [(path, headers, _, _)] = receiver.wait_for("/cred?token=tok-secret&job=7", 1)  # the real URL
    assert headers["authorization"] == "Basic " + base64.b64encode(b"hook-user:hunter2").decode()
    assert headers[DELIVERY_HEADER.lower()]
    shown = f"http://***@{host}/cred?token=***&job=***"
    record = settled(fake_server.url, job["job_id"])
    assert record["callback"]["url"] == shown and record["callback"]["state"] == "delivered"
    [listed] = httpx.get(f"{fake_server.url}/jobs").json()["jobs"]
    assert listed["callback"]["url"] == shown
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "delivered" in logged
    for secret in ("hunter2", "tok-secret", "hook-user"):
        assert secret not in logged
        assert secret not in str(record) and secret not in str(listed)
