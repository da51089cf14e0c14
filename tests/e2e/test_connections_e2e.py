"""An idle-connection flood against the real server process with few file
descriptors (ulimit -n 400): it closes the longest-idle connections instead of
running out, and /health keeps answering."""

from __future__ import annotations

import contextlib
import resource
import socket
from pathlib import Path

import httpx

from whisper_mcp.testing import ServerProcess


def test_idle_flood_with_few_descriptors_leaves_health_answering(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "storage", tmp_path / "server.log")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))  # the child inherits it
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((("127.0.0.1", server.port)), timeout=5))
        for _ in range(3):
            assert httpx.get(f"{server.url}/health", timeout=20).json()["status"] == "ok"
        assert "lowered to 272 to fit the open-files limit" in server.log()
        assert server.log().count("Too many open files") <= 1
    finally:
        for sock in idle:
            sock.close()
        server.stop()
