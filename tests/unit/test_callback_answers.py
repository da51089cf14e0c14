"""What a callback reads of its receiver's answer: the status, and no more
than a few KB, as sent. Real receivers on loopback answer a gigabyte, and a
gzip bomb of about 2 MB that inflates to 2 GiB, to a real server in this
process (over a fake engine): each callback is delivered at once, and the
process's memory stays where it was. Delivery as such:
tests/unit/test_callbacks.py."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import FIXTURES, InProcessServer, wait_done

MiB = 1 << 20
HUGE_MIB = 1024  # a 1 GiB answer
BOMB_MIB = 2048  # what the gzip bomb inflates to
# What a delivery may add to the process's memory: a few network reads.
GROWTH_BOUND = 50 * MiB


@dataclass(frozen=True)
class GzipOfZeros:
    """A valid gzip stream of ``mib`` MiB of zeros, sent without ever being
    whole in memory: every MiB after the first compresses, after a full
    flush, to the same ``block`` (about 1 KB)."""

    mib: int
    head: bytes = field(init=False)
    block: bytes = field(init=False)
    tail: bytes = field(init=False)

    def __post_init__(self) -> None:
        zeros = bytes(MiB)
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        head = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
        block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(self.mib):
            crc = zlib.crc32(zeros, crc)
        tail = packer.flush()[:-8] + struct.pack("<II", crc, (self.mib * MiB) & 0xFFFFFFFF)
        object.__setattr__(self, "head", head)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "tail", tail)

    def __len__(self) -> int:
        return len(self.head) + (self.mib - 1) * len(self.block) + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        for _ in range(self.mib - 1):
            yield self.block
        yield self.tail


def zeros(mib: int) -> Iterator[bytes]:
    chunk = bytes(64 * 1024)
    for _ in range(mib * 16):
        yield chunk


class Answering:
    """A local HTTP receiver that answers every POST 200 with ``size`` bytes
    from ``body`` (an iterable of chunks, made anew for each answer) and
    ``headers``; it records the request headers and how much it got to send
    before the client hung up."""

    def __init__(self, body: Iterable[bytes] | None, size: int, headers: dict[str, str] | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        self.sent: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                for name, value in {"content-length": str(size), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                sent = 0
                try:
                    for chunk in body if body is not None else zeros(size // MiB):
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                receiver.sent.append(sent)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class PeakMemory:
    """This process's resident memory, sampled every few milliseconds on a
    thread while in use: ``peak`` less ``start`` is what it grew by."""

    def __init__(self) -> None:
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@pytest.fixture(scope="module")
def gzipped() -> GzipOfZeros:
    return GzipOfZeros(BOMB_MIB)


def test_the_bomb_is_a_valid_gzip_stream_of_zeros(gzipped: GzipOfZeros) -> None:
    small = GzipOfZeros(5)
    inflated = zlib.decompress(b"".join(small), wbits=31)
    assert inflated == bytes(5 * MiB) and len(b"".join(small)) == len(small)
    assert small.block == gzipped.block and len(gzipped) < 3 * MiB  # about 2 MB for 2 GiB


@pytest.fixture
def huge() -> Iterator[Answering]:
    r = Answering(None, HUGE_MIB * MiB)
    yield r
    r.close()


@pytest.fixture
def bomb(gzipped: GzipOfZeros) -> Iterator[Answering]:
    r = Answering(gzipped, len(gzipped), {"content-encoding": "gzip", "content-type": "application/json"})
    yield r
    r.close()


@pytest.mark.parametrize("answer", ["huge", "bomb"])
def test_a_huge_or_compressed_answer_costs_the_server_no_memory(
    tmp_path: Path, answer: str, request: pytest.FixtureRequest
) -> None:
    receiver: Answering = request.getfixturevalue(answer)
    with InProcessServer.start(tmp_path / "storage", callback_concurrency=1) as srv, srv.client() as client:
        with open(FIXTURES / "short.wav", "rb") as f:  # a first job: the server's own memory settles
            client.post("/transcribe", files={"file": ("short.wav", f)}, data={"cache": "false"})
        with PeakMemory() as memory:
            with open(FIXTURES / "short.wav", "rb") as f:
                response = client.post(
                    "/transcribe",
                    files={"file": ("short.wav", f)},
                    data={"cache": "false", "callback_url": f"{receiver.url}/{answer}"},
                )
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            wait_done(client, job_id)
            done = time.monotonic()
            while (record := client.get(f"/status/{job_id}").json())["callback"]["attempts"] < 1:
                assert time.monotonic() - done < 15, record
                time.sleep(0.01)
            took = time.monotonic() - done
    grew = memory.peak - memory.start
    assert grew < GROWTH_BOUND, f"the server grew by {grew / MiB:.0f} MiB"
    assert record["callback"]["state"] == "delivered", record  # the status code was read: 200
    assert took < 5, f"delivered {took:.1f} s after the job ended"  # not after the 10 s timeout
    [headers] = receiver.requests
    assert headers["accept-encoding"] == "identity"
    deadline = time.monotonic() + 10
    while not receiver.sent:  # the receiver's write fails once the server hangs up
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert receiver.sent[0] < 64 * MiB  # it was cut off: not read to the end
