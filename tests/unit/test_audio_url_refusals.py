"""Where a job sent as a URL may fetch from: the callbacks' egress policy
refuses private, internal, link-local and metadata addresses (literal, by a
name's resolution, or as a redirect's target) unless the operator's
--callback-allow permits them, and the job fails saying so.

These tests name addresses beyond loopback, so they run inside a network
namespace whose only interface is loopback (``unshare -n``): should the
policy let a fetch through, no packet can leave the machine. Outside one,
``test_the_refusals_in_a_network_namespace`` runs this module again inside
one; the others skip. Names resolve through a resolver the tests inject."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from npm_clients import need_netns, run_in_netns

from whisper_mcp.server.audio_urls import UNREACHABLE, HttpFetcher
from whisper_mcp.server.egress import CallbackPolicy

from helpers import FIXTURES, ROOT, AudioServer, InProcessServer, wait_done

INSIDE = os.environ.get("WHISPER_MCP_TEST_NETNS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs in a network namespace: test_the_refusals_in_a_network_namespace")


@pytest.mark.slow
@pytest.mark.skipif(INSIDE, reason="already inside the namespace")
def test_the_refusals_in_a_network_namespace() -> None:
    need_netns()
    env = {**os.environ, "WHISPER_MCP_TEST_NETNS": "1", "PYTHONPATH": str(ROOT)}
    done = run_in_netns(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        env,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed, 1 skipped" in done.stdout, done.stdout[-2000:]


class Names:
    """A resolver: each name to its addresses; any other name does not resolve."""

    def __init__(self, **names: list[str]) -> None:
        self.names = {name.replace("_", "."): addresses for name, addresses in names.items()}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host not in self.names:
            raise OSError(f"no such host {host}")
        return self.names[host]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    assert [name for _, name in socket.if_nameindex()] == ["lo"]  # nothing but loopback here
    with InProcessServer.start(tmp_path / "storage") as srv:
        yield srv


def use_policy(srv: InProcessServer, policy: CallbackPolicy) -> None:
    fetcher = srv.service.sources.fetchers["http"]  # type: ignore[union-attr]
    assert isinstance(fetcher, HttpFetcher)
    fetcher.policy = policy


def failed(client: httpx.Client, url: str) -> str:
    response = client.post("/transcribe", files={"audio_url": (None, url)})
    assert response.status_code == 202, response.text
    record = wait_done(client, response.json()["job_id"])
    assert record["status"] == "failed", record
    return str(record["error"])


@inside
def test_private_and_metadata_addresses_are_refused(server: InProcessServer) -> None:
    use_policy(server, CallbackPolicy(allow_loopback=True, resolver=Names(files_internal=["10.20.30.40"])))
    with server.client() as client:
        assert failed(client, "http://10.20.30.40/a.wav") == (
            "could not fetch audio from 10.20.30.40: audio_url refused: 10.20.30.40 is a private or internal "
            "address; the server's operator can allow it with --callback-allow."
        )
        assert failed(client, "http://169.254.169.254/latest/meta-data/") == (
            "could not fetch audio from 169.254.169.254: audio_url refused: 169.254.169.254 is a link-local, "
            "cloud-metadata, multicast, unspecified or reserved address; audio fetches never go there."
        )
        # A name: one answer whether it resolves to a refused address or not at all.
        for name in ("files.internal", "nowhere.example"):
            assert failed(client, f"https://{name}/a.wav") == (
                f"could not fetch audio from {name}: audio_url refused: its host {name!r} does not resolve here "
                "to an address audio fetches may go to (public addresses, and those the server's operator "
                "allows with --callback-allow)."
            )
    assert server.engine.batches == []


@inside
def test_a_redirect_to_a_private_address_is_refused(server: InProcessServer) -> None:
    audio = AudioServer()
    try:
        url = audio.redirect("/a.wav", "http://192.168.1.10/a.wav")
        meta = audio.redirect("/b.wav", "http://[fd00:ec2::254]/latest/", status=307)
        with server.client() as client:
            assert failed(client, url) == (
                "could not fetch audio from 127.0.0.1: its redirect to 192.168.1.10 was refused: audio_url "
                "refused: 192.168.1.10 is a private or internal address; the server's operator can allow it "
                "with --callback-allow."
            )
            assert "its redirect to fd00:ec2::254 was refused" in failed(client, meta)
            assert "audio fetches never go there" in failed(client, meta)
        assert [path for path, _ in audio.requests] == ["/a.wav", "/b.wav", "/b.wav"]
    finally:
        audio.close()


@inside
def test_loopback_is_refused_unless_the_server_listens_there(server: InProcessServer) -> None:
    audio = AudioServer()
    try:
        url = audio.serve("/a.wav", FIXTURES / "short.wav")
        use_policy(server, CallbackPolicy(allow_loopback=False))
        with server.client() as client:
            assert "127.0.0.1 is a loopback address, which audio fetches may reach only" in failed(client, url)
        assert audio.requests == []
    finally:
        audio.close()


@inside
def test_the_allow_list_lets_a_private_address_through(server: InProcessServer) -> None:
    use_policy(server, CallbackPolicy(["10.20.30.0/24"], resolver=Names(files_internal=["10.20.30.40"])))
    with server.client() as client:
        # Allowed: a connection is tried, and finds no network in this namespace.
        assert (
            failed(client, "http://files.internal:9/a.wav")
            == f"could not fetch audio from files.internal: {UNREACHABLE}"
        )
        assert "10.20.30.41 is a private" not in failed(client, "http://10.20.30.41:9/a.wav")


@inside
def test_a_name_is_connected_at_the_address_vetted(server: InProcessServer) -> None:
    """The fetch goes to the address the policy vetted, under the URL's name."""
    audio = AudioServer()
    try:
        audio.serve("/a.wav", FIXTURES / "short.wav")
        port = audio.url.rsplit(":", 1)[1]
        use_policy(server, CallbackPolicy(allow_loopback=True, resolver=Names(audio_example=["127.0.0.1"])))
        with server.client() as client:
            response = client.post("/transcribe", files={"audio_url": (None, f"http://audio.example:{port}/a.wav")})
            record = wait_done(client, response.json()["job_id"])
        assert record["status"] == "completed", record
        [(_, headers)] = audio.requests
        assert headers["host"] == f"audio.example:{port}"
    finally:
        audio.close()
