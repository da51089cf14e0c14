"""Connections cannot pin the server: idle floods, half-sent headers and
bodies shorter than their Content-Length are closed, and asyncio's
repeated errors are rate-limited in the log; a WebSocket outlives them."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from whisper_mcp.logs import RepeatFilter

from helpers import FIXTURES, InProcessServer


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[InProcessServer]:
    # A request answered before its whole body came (an unknown upload URL)
    # is closed by the keep-alive timeout: short here too.
    with InProcessServer.start(
        tmp_path / "storage",
        max_connections=50,
        header_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
        keep_alive_seconds=0.5,
    ) as srv:
        yield srv


def closed_by_server(sock: socket.socket, wait: float = 20) -> bool:
    """True once the server closes the connection (waits at most ``wait`` s)."""
    sock.settimeout(wait)
    try:
        while chunk := sock.recv(4096):
            if b"HTTP/1.1" in chunk:
                continue  # a response, then the close
        return True
    except TimeoutError:
        return False


def test_an_idle_connection_flood_leaves_health_answering(tight: InProcessServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", tight.port)) for _ in range(300)]
    try:
        with tight.client() as c:  # past the cap of 50: the longest-idle connections make room
            for _ in range(5):
                assert c.get("/health").status_code == 200
        # The server held at most its cap: the others were closed on its side.
        assert sum(closed_by_server(sock, wait=0.2) for sock in idle) >= 250
    finally:
        for sock in idle:
            sock.close()


def test_half_sent_headers_are_closed(tight: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", tight.port)) as silent:
        assert closed_by_server(silent)
    with socket.create_connection(("127.0.0.1", tight.port)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert closed_by_server(slow)


def test_a_websocket_is_not_closed_by_the_body_timeout(tight: InProcessServer) -> None:
    """The upgrade request's body never comes: its deadline must not close the WebSocket."""
    url = tight.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription&store=false"
    with connect(url) as ws:
        assert b"session.created" in str(ws.recv(timeout=10)).encode()
        time.sleep(1.5)  # three body timeouts
        ws.send('{"type": "input_audio_buffer.clear"}')
        assert "input_audio_buffer.cleared" in str(ws.recv(timeout=10))


def test_a_body_shorter_than_its_length_is_dropped(tight: InProcessServer) -> None:
    audio = (FIXTURES / "short.wav").read_bytes()
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(
            b"PUT /upload/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(audio) * 2}\r\n\r\n".encode()
            + audio
        )
        assert closed_by_server(sock)
    boundary = "b0und"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.wav"\r\n\r\n'.encode() + audio
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(
            b"POST /transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(head) + 500}\r\n\r\n".encode()
            + head
        )
        assert closed_by_server(sock)
    with tight.client() as c:
        assert c.get("/health").status_code == 200
    assert list((tight.storage / "incoming").iterdir()) == []  # the partial upload was removed


def test_repeated_messages_are_rate_limited() -> None:
    now = [0.0]
    limit = RepeatFilter(interval=10, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [limit.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert limit.filter(record("something else"))
    now[0] = 11.0
    later = record("socket.accept() out of system resource")
    assert limit.filter(later) and "999 more time(s)" in later.getMessage()
