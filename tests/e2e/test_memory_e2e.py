"""A large upload streams to disk: the real server process's memory stays flat."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import ServerProcess

pytestmark = pytest.mark.e2e

UPLOAD_MB = 300


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def wait_idle(url: str, timeout: float = 120) -> None:
    """Until the shared server runs and queues nothing (earlier tests' jobs)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if health["processing"] is None and health["queue_size"] == 0:
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.2)


def test_large_upload_keeps_memory_flat(server: ServerProcess) -> None:
    """On the shared real server, once it is idle."""
    srv = server
    wait_idle(srv.url)
    pid = srv.pid
    time.sleep(0.5)
    baseline = rss_kb(pid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = UPLOAD_MB * 2**20

    def body() -> Iterator[bytes]:  # generated on the fly: the test holds 1 MiB at a time
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        # 8 kHz: ~5.5 hours, over the server's default 4 hour limit
        yield wav_header(size, rate=8000)
        block = bytes(range(256)) * 4096
        for _ in range(UPLOAD_MB):
            yield block
        yield b"\r\n--B--\r\n"

    try:
        response = httpx.post(
            f"{srv.url}/transcribe",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=B"},
            timeout=300,
        )
    finally:
        done.set()
        sampler.join()
    # Accepted in full, then refused from its header: ~5.5 hours of audio.
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "audio_too_long"
    growth_mb = (peak[0] - baseline) / 1024
    print(f"RSS baseline {baseline / 1024:.0f} MB, peak {peak[0] / 1024:.0f} MB, growth {growth_mb:.1f} MB")
    assert growth_mb < 48, f"server memory grew {growth_mb:.1f} MB during a {UPLOAD_MB} MB upload"
    assert list((srv.storage / "incoming").iterdir()) == []
