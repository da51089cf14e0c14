"""Host checks against DNS rebinding: a page whose name now resolves to the
server sends its own name as Host, and is refused (421) on every route."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from whisper_mcp.server.http.security import allowed_hosts, host_of

from helpers import FIXTURES, INIT, MCP_HEADERS, InProcessServer, submit, wait_done


def test_a_rebound_host_is_refused_on_every_route(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    job = wait_done(fake_client, submit(fake_client, FIXTURES / "short.wav")["job_id"])
    assert job["status"] == "completed"
    job_id = job["job_id"]
    rebound = {"host": f"attacker.example:{fake_server.port}"}
    for path in (f"/download/{job_id}", f"/status/{job_id}", f"/jobs/{job_id}", "/jobs", "/health", "/metrics", "/"):
        answer = fake_client.get(path, headers=rebound)
        assert answer.status_code == 421, path
        message = answer.json()["error"]["message"]
        assert "'attacker.example'" in message and "--allowed-hosts" in message
        assert job_id not in answer.text
    mcp = fake_client.post("/mcp", json=INIT, headers={**MCP_HEADERS, **rebound})
    assert mcp.status_code == 421
    assert fake_client.delete(f"/jobs/{job_id}", headers=rebound).status_code == 421
    with open(FIXTURES / "short.wav", "rb") as f:
        posted = fake_client.post("/transcribe", files={"file": ("s.wav", f)}, headers=rebound)
    assert posted.status_code == 421
    # The loopback names, with any port, are the server's own.
    for host in ("127.0.0.1", f"localhost:{fake_server.port}", "[::1]:80", "LOCALHOST."):
        assert fake_client.get(f"/download/{job_id}", headers={"host": host}).status_code == 200, host
    assert fake_client.post("/mcp", json=INIT, headers=MCP_HEADERS).status_code == 200


def test_configured_names_are_accepted(tmp_path: Path) -> None:
    with InProcessServer.start(
        tmp_path / "storage", allowed_hosts=("transcriber.lan",), public_url="https://whisper.example.org/base"
    ) as srv:
        with srv.client() as c:
            assert c.get("/health", headers={"host": "transcriber.lan:8765"}).status_code == 200
            assert c.get("/health", headers={"host": "whisper.example.org"}).status_code == 200
            assert c.get("/health", headers={"host": "other.lan"}).status_code == 421
    with InProcessServer.start(tmp_path / "any", allowed_hosts=("*",)) as srv:
        with srv.client() as c:
            assert c.get("/health", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    ("header", "name"),
    [("example.org:80", "example.org"), ("[::1]:8765", "::1"), ("::1", "::1"), ("Host.LAN.", "host.lan")],
)
def test_host_of(header: str, name: str) -> None:
    assert host_of(header) == name


def test_allowed_hosts() -> None:
    assert allowed_hosts("0.0.0.0", "", ()) == {"localhost", "127.0.0.1", "::1", "host.docker.internal"}
    assert allowed_hosts("10.0.0.5", "http://lb.internal:8080", ("a.lan",)) == {
        "localhost", "127.0.0.1", "::1", "host.docker.internal", "10.0.0.5", "lb.internal", "a.lan",
    }  # fmt: skip
    assert allowed_hosts("127.0.0.1", "", ("*",)) is None
