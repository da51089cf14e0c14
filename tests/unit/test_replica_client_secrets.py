"""Client secrets on two replicas (one PostgreSQL database): a secret one
replica made opens a socket on the other, once; two handshakes racing with
one secret on both replicas open one socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
from websockets.exceptions import InvalidStatus

from helpers import InProcessServer

TOKEN = "replica-token"


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    with (
        InProcessServer.start(tmp_path / "a", token=TOKEN, database_url=postgres_url, replica_id="a") as a,
        InProcessServer.start(tmp_path / "b", token=TOKEN, database_url=postgres_url, replica_id="b") as b,
    ):
        yield a, b


def secret(server: InProcessServer) -> str:
    body = {"session": {"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}}}
    answer = httpx.post(
        f"{server.url}/v1/realtime/client_secrets", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["value"])


def open_with(server: InProcessServer, value: str) -> Any:
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription&store=false"
    protocols: Any = ["realtime", "openai-insecure-api-key." + value]
    return websockets.sync.client.connect(url, subprotocols=protocols, open_timeout=10)


def test_a_secret_from_one_replica_opens_a_socket_on_the_other_once(
    replicas: tuple[InProcessServer, InProcessServer],
) -> None:
    a, b = replicas
    value = secret(a)
    with open_with(b, value) as socket:
        assert json.loads(socket.recv(10))["type"] == "session.created"
        updated = json.loads(socket.recv(10))
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
    for server in (a, b):
        with pytest.raises(InvalidStatus) as raised:
            open_with(server, value)
        assert raised.value.response.status_code == 401


def test_one_secret_presented_on_both_replicas_at_once_opens_one_socket(
    replicas: tuple[InProcessServer, InProcessServer],
) -> None:
    a, b = replicas
    for _ in range(5):
        value = secret(b)
        outcomes: list[str] = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=race, args=(server, value, start, outcomes)) for server in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["401", "opened"], outcomes


def race(server: InProcessServer, value: str, start: threading.Barrier, outcomes: list[str]) -> None:
    start.wait()
    try:
        with open_with(server, value):
            outcomes.append("opened")
    except InvalidStatus as exc:
        outcomes.append(str(exc.response.status_code))
