"""Callback receivers whose answers are big, and a sampler of a process's
peak memory: what the tests of how much of an answer a callback reads need
(tests/unit/test_callback_answers.py, tests/e2e/test_callbacks_e2e.py)."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MiB = 1 << 20
HUGE_MIB = 1024  # a 1 GiB answer
BOMB_MIB = 2048  # what the gzip bomb inflates to
# What a callback's delivery may add to the server's memory: a few network reads.
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
    """A local HTTP receiver that answers a POST 200 with ``size`` bytes from
    ``body`` (an iterable of chunks, iterated anew for each answer; zeros if
    None) and ``headers``, after answering the first ``fail_first`` with a
    bare 503. It records the request headers, and how much of each big
    answer it got to send before the client hung up."""

    def __init__(
        self,
        body: Iterable[bytes] | None,
        size: int,
        headers: dict[str, str] | None = None,
        *,
        fail_first: int = 0,
    ) -> None:
        self.requests: list[dict[str, str]] = []
        self.sent: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append({k.lower(): v for k, v in self.headers.items()})
                if len(receiver.requests) <= fail_first:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
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


def big_answer(kind: str, *, fail_first: int = 0) -> Answering:
    """A receiver answering ``huge`` (1 GiB) or ``bomb`` (gzip of 2 GiB)."""
    if kind == "huge":
        return Answering(None, HUGE_MIB * MiB, fail_first=fail_first)
    bomb = GzipOfZeros(BOMB_MIB)
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    return Answering(bomb, len(bomb), headers, fail_first=fail_first)


class PeakMemory:
    """A process's resident memory (this one's unless ``pid`` is given),
    sampled every few milliseconds on a thread while in use: ``peak`` less
    ``start`` is what it grew by."""

    def __init__(self, pid: int | str = "self") -> None:
        self._statm = Path(f"/proc/{pid}/statm")
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        pages = int(self._statm.read_text().split()[1])
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
