"""Realtime client secrets and the WebSocket handshake's credential: the
registry on a real SQLite file, ``authenticate_websocket`` on handshake
scopes, and ``POST /v1/realtime/client_secrets`` through OpenAI's own SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets.sync.client
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse
from websockets.exceptions import InvalidStatus

from whisper_mcp.queue.client_secrets import SQLClientSecretStore
from whisper_mcp.queue.sqlite import SQLiteDatabase
from whisper_mcp.server import realtime_secrets
from whisper_mcp.server.http.realtime_auth import RealtimeRefused, authenticate_websocket
from whisper_mcp.server.realtime_secrets import ClientSecrets

from helpers import InProcessServer

TOKEN = "s3cret-token"
TRANSCRIPTION = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "tiny.en", "language": "en", "prompt": "whisper-mcp"},
            "turn_detection": None,
        }
    },
}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ClientSecrets]:
    db = SQLiteDatabase(tmp_path / "jobs.sqlite3")
    yield ClientSecrets(SQLClientSecretStore(db))
    db.close()


def scope(*, authorization: str | None = None, protocols: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8765")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    if protocols is not None:
        headers.append((b"sec-websocket-protocol", protocols.encode()))
    return {"type": "websocket", "path": "/v1/realtime", "headers": headers, "query_string": b"intent=transcription"}


def check(registry: ClientSecrets, token: str | None = TOKEN, **headers: str) -> Any:
    return asyncio.run(authenticate_websocket(scope(**headers), token=token, secrets=registry))


def refused(registry: ClientSecrets, token: str | None = TOKEN, **headers: str) -> RealtimeRefused:
    with pytest.raises(RealtimeRefused) as raised:
        check(registry, token, **headers)
    return raised.value


def new_secret(registry: ClientSecrets, body: object = None) -> dict[str, Any]:
    return asyncio.run(registry.create(body))


# -- the registry -----------------------------------------------------------------


def test_a_secret_carries_its_session_and_works_once(registry: ClientSecrets) -> None:
    made = new_secret(registry, {"session": TRANSCRIPTION})
    assert made["value"].startswith("ek_") and len(made["value"]) > 40
    assert made["expires_at"] - time.time() == pytest.approx(60, abs=2)
    assert asyncio.run(registry.redeem(made["value"])) == TRANSCRIPTION
    assert asyncio.run(registry.redeem(made["value"])) is None


def test_an_expired_secret_is_refused_and_swept(registry: ClientSecrets, monkeypatch: pytest.MonkeyPatch) -> None:
    made = new_secret(registry, {"expires_after": {"anchor": "created_at", "seconds": 10}})
    assert made["expires_at"] - time.time() == pytest.approx(10, abs=2)
    later = time.time() + 11
    monkeypatch.setattr(realtime_secrets.time, "time", lambda: later)
    assert asyncio.run(registry.redeem(made["value"])) is None
    other = new_secret(registry)
    assert registry.sweep(later + 61) == 1  # the other one; the expired one went when it was presented
    assert asyncio.run(registry.redeem(other["value"])) is None


def test_only_a_hash_is_stored(registry: ClientSecrets, tmp_path: Path) -> None:
    made = new_secret(registry)
    assert made["value"].encode() not in (tmp_path / "jobs.sqlite3").read_bytes()
    wal = tmp_path / "jobs.sqlite3-wal"
    assert not wal.exists() or made["value"].encode() not in wal.read_bytes()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "must be a JSON object"),
        ({"ttl": 5}, "Unknown field(s) ttl"),
        ({"expires_after": {"seconds": 5}}, "between 10 and 600"),
        ({"expires_after": {"seconds": 7200}}, "between 10 and 600"),
        ({"expires_after": {"seconds": "60"}}, "whole number of seconds"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "'created_at'"),
        # Checked as the socket checks a session.update.
        ({"session": {"type": "realtime"}}, "transcription sessions only"),
        ({"session": {"audio": {}}}, "set session.type to 'transcription'"),
        ({"session": {"type": "transcription", "voice": "alloy"}}, "Unknown parameter session.voice"),
        ({"session": {"type": "transcription", "audio": {"input": {"format": {"type": "audio/mp3"}}}}}, "audio/pcm"),
        (
            {"session": {"type": "transcription", "audio": {"input": {"transcription": {"model": 1}}}}},
            "transcription.model must be a string",
        ),
    ],
)
def test_a_body_it_cannot_take_is_refused_in_words(registry: ClientSecrets, body: object, words: str) -> None:
    with pytest.raises(realtime_secrets.InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        new_secret(registry, body)


def test_the_answer_has_openais_shape_with_defaults(registry: ClientSecrets) -> None:
    made = ClientSecretCreateResponse.model_validate(new_secret(registry))
    session = made.session
    assert session.type == "transcription" and session.object == "realtime.transcription_session"
    assert session.audio is not None and session.audio.input is not None
    assert session.audio.input.format is not None and session.audio.input.format.type == "audio/pcm"
    assert session.audio.input.turn_detection is not None and session.audio.input.turn_detection.type == "server_vad"


# -- the handshake's credential ------------------------------------------------------


def test_the_token_opens_as_a_header_or_a_subprotocol(registry: ClientSecrets) -> None:
    by_header = check(registry, authorization=f"Bearer {TOKEN}")
    assert (by_header.via, by_header.session, by_header.subprotocol) == ("token", None, None)
    by_protocol = check(registry, protocols=f"realtime, openai-insecure-api-key.{TOKEN}")
    assert (by_protocol.via, by_protocol.subprotocol) == ("token", "realtime")


def test_a_wrong_or_missing_token_is_refused(registry: ClientSecrets) -> None:
    for headers in ({"authorization": "Bearer nope"}, {"protocols": "realtime, openai-insecure-api-key.nope"}, {}):
        refusal = refused(registry, **headers)
        assert refusal.status == 401 and "client_secrets" in refusal.message and TOKEN not in refusal.message


def test_a_client_secret_opens_once_with_its_session(registry: ClientSecrets) -> None:
    made = new_secret(registry, {"session": TRANSCRIPTION})
    protocols = f"realtime,openai-insecure-api-key.{made['value']}"
    identity = check(registry, protocols=protocols)
    assert (identity.via, identity.session, identity.subprotocol) == ("client_secret", TRANSCRIPTION, "realtime")
    again = refused(registry, protocols=protocols)
    assert again.code == "invalid_client_secret" and "already used" in again.message


def test_an_expired_client_secret_is_refused(registry: ClientSecrets, monkeypatch: pytest.MonkeyPatch) -> None:
    made = new_secret(registry, {"expires_after": {"seconds": 10}})
    later = time.time() + 10.5
    monkeypatch.setattr(realtime_secrets.time, "time", lambda: later)
    assert refused(registry, authorization=f"Bearer {made['value']}").code == "invalid_client_secret"


def test_a_client_secret_is_checked_on_an_open_server_too(registry: ClientSecrets) -> None:
    assert check(registry, token=None).via == "open"
    assert check(registry, token=None, authorization="Bearer anything").via == "open"
    assert refused(registry, token=None, authorization="Bearer ek_made_up").status == 401


# -- over HTTP and WebSocket, on a real server ------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path_factory.mktemp("storage"), token=TOKEN) as srv:
        yield srv


def test_openais_sdk_creates_a_secret(server: InProcessServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
    made = client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 30},
        session={"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}},
    )
    assert made.value.startswith("ek_") and made.expires_at - time.time() == pytest.approx(30, abs=2)
    assert made.session.type == "transcription"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).realtime.client_secrets.create()
    with pytest.raises(openai.BadRequestError, match="between 10 and 600"):
        client.realtime.client_secrets.create(expires_after={"anchor": "created_at", "seconds": 7200})


def test_a_broken_body_is_refused_in_openais_shape(server: InProcessServer) -> None:
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.post("/v1/realtime/client_secrets", content=b"{not json")
        assert response.status_code == 400 and response.json()["error"]["message"] == "The body is not valid JSON."
        assert client.post("/v1/realtime/client_secrets", content=b"x" * 70_000).status_code == 413
        assert client.post("/v1/realtime/client_secrets").status_code == 200  # no body: the defaults


def test_a_handshake_from_another_origin_or_host_is_refused(server: InProcessServer) -> None:
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(InvalidStatus) as raised:
        websockets.sync.client.connect(url, origin="https://evil.example", additional_headers=auth, open_timeout=5)
    assert raised.value.response.status_code == 403
    assert b"Origin 'https://evil.example' is not allowed" in raised.value.response.body
    with pytest.raises(InvalidStatus) as raised:
        # A rebinding page's name as Host, on a socket to this server.
        sock = socket.create_connection(("127.0.0.1", server.port))
        websockets.sync.client.connect(url.replace("127.0.0.1", "evil.example"), sock=sock, additional_headers=auth)
    assert raised.value.response.status_code == 421


def test_client_secret_route_needs_the_token(server: InProcessServer) -> None:
    response = httpx.post(f"{server.url}/v1/realtime/client_secrets", json={})
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"


def test_the_dashboards_audio_worklet_is_public_javascript(server: InProcessServer) -> None:
    """The Live panel's worklet module loads without the token (a worklet
    request cannot carry one), as the page itself does."""
    response = httpx.get(f"{server.url}/live-worklet.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    assert 'registerProcessor("pcm16-downsampler"' in response.text


def test_the_socket_opens_with_a_secret_once_and_starts_with_its_session(server: InProcessServer) -> None:
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        made = client.post("/v1/realtime/client_secrets", json={"session": TRANSCRIPTION}).json()
    assert made["session"]["audio"]["input"]["transcription"]["language"] == "en"
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription&store=false"
    protocols: Any = ["realtime", "openai-insecure-api-key." + made["value"]]
    with websockets.sync.client.connect(url, subprotocols=protocols, open_timeout=5) as socket:
        assert socket.subprotocol == "realtime"
        assert json.loads(socket.recv(5))["type"] == "session.created"
        updated = json.loads(socket.recv(5))
        assert updated["type"] == "session.updated"
        transcription = updated["session"]["audio"]["input"]["transcription"]
        assert (transcription["language"], transcription["prompt"]) == ("en", "whisper-mcp")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
    with pytest.raises(InvalidStatus) as raised:
        websockets.sync.client.connect(url, subprotocols=protocols, open_timeout=5)
    assert raised.value.response.status_code == 401
    assert json.loads(raised.value.response.body)["error"]["code"] == "invalid_client_secret"
    # The token itself, as a browser would send it: opens, with no session of its own.
    token_protocols: Any = ["realtime", f"openai-insecure-api-key.{TOKEN}"]
    with websockets.sync.client.connect(url, subprotocols=token_protocols, open_timeout=5) as socket:
        assert json.loads(socket.recv(5))["type"] == "session.created"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["type", "audio", "input", "format", "transcription", "turn_detection", "rate", "seconds"])


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    session=st.dictionaries(KEYS, JSON, max_size=4) | JSON,
    expires=st.dictionaries(st.sampled_from(["anchor", "seconds"]), JSON, max_size=2) | JSON,
)
def test_any_json_is_taken_or_refused_in_words(session: object, expires: object) -> None:
    for parse, value in ((realtime_secrets.parse_session, session), (realtime_secrets.parse_expires_after, expires)):
        try:
            parse(value)
        except realtime_secrets.InvalidInput as exc:
            assert exc.message


def test_a_session_the_socket_would_refuse_is_refused_at_once(server: InProcessServer) -> None:
    session = {"type": "transcription", "audio": {"input": {"transcription": {"model": "no-such-model"}}}}
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        answer = client.post("/v1/realtime/client_secrets", json={"session": session})
    assert answer.status_code == 400 and "no-such-model" in answer.json()["error"]["message"]
