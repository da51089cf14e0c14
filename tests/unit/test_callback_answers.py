"""What a callback reads of its receiver's answer: the status, and no more
than a few KB, as sent. Real receivers on loopback answer a gigabyte, and a
gzip bomb of about 2 MB that inflates to 2 GiB, to a real server in this
process (over a fake engine): each callback is delivered at once, and the
process's memory stays where it was. Delivery as such:
tests/unit/test_callbacks.py."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from big_answers import BOMB_MIB, GROWTH_BOUND, Answering, GzipOfZeros, MiB, PeakMemory, big_answer
from helpers import FIXTURES, InProcessServer, submit, wait_done


def test_the_bomb_is_a_valid_gzip_stream_of_zeros() -> None:
    small = GzipOfZeros(5)
    inflated = zlib.decompress(b"".join(small), wbits=31)
    assert inflated == bytes(5 * MiB) and len(b"".join(small)) == len(small)
    bomb = GzipOfZeros(BOMB_MIB)
    assert small.block == bomb.block and len(bomb) < 3 * MiB  # about 2 MB for 2 GiB


@pytest.fixture(params=["huge", "bomb"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Answering]:
    r = big_answer(request.param)
    yield r
    r.close()


def test_a_huge_or_compressed_answer_costs_the_server_no_memory(tmp_path: Path, receiver: Answering) -> None:
    with InProcessServer.start(tmp_path / "storage", callback_concurrency=1) as srv, srv.client() as client:
        submit(client, FIXTURES / "short.wav")  # a first job: the server's own memory settles
        with PeakMemory() as memory:
            job_id = submit(client, FIXTURES / "short.wav", callback_url=f"{receiver.url}/cb")["job_id"]
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
