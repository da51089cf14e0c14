"""The object store (``--storage-url``) against a real S3-compatible server
(SeaweedFS on loopback, tests/s3.py): what the queue, the worker and the
uploads rely on, as the storage folder gives it (tests/unit/test_store.py,
test_partial.py), and a clear 503 in seconds when the store is away."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.errors import DataMissing, StorageUnavailable
from whisper_mcp.queue.files import new_key
from whisper_mcp.queue.objects import PART_BYTES, ObjectStore, connect, parse_url
from whisper_mcp.queue.partial import PartialCursor

from s3 import SeaweedFS

pytestmark = pytest.mark.slow


@pytest.fixture
def store(seaweedfs: SeaweedFS, bucket_url: str, tmp_path: Path) -> Iterator[ObjectStore]:
    # A prefix per test: the module's bucket is shared.
    yield ObjectStore(connect(f"{bucket_url}/{new_key()}", environ=seaweedfs.env), tmp_path / "scratch")


def segment(i: int) -> dict[str, object]:
    return {"start": float(i), "end": i + 1.0, "text": f" word{i}"}


def test_storage_urls() -> None:
    assert parse_url("s3://bucket") == parse_url("s3://bucket/")
    assert parse_url("s3://bucket/a/b/").prefix == "a/b"
    for bad in ("bucket/prefix", "https://bucket/x", "s3:///prefix"):
        with pytest.raises(ValueError, match="s3://bucket"):
            parse_url(bad)


def test_audio_goes_up_in_parts_and_comes_back_as_a_scratch_file(store: ObjectStore) -> None:
    key = new_key()
    sink = store.incoming_file(2**30, 0)
    block = os.urandom(2**20)
    for _ in range(PART_BYTES // len(block) * 2 + 1):  # more than two parts: a multipart upload
        sink.write(block)
    upload = sink.finish()
    digest = hashlib.sha256(upload.path.read_bytes()).hexdigest()
    store.accept(upload, key)
    store.write_references(key, [b"alice", b"bob"])
    assert not upload.path.exists()  # sent on: the local folder is scratch
    with store.job_files(key, 2) as local:
        assert hashlib.sha256(local.audio.read_bytes()).hexdigest() == digest == upload.sha256
        assert [p.read_bytes() for p in local.references] == [b"alice", b"bob"]
    assert not local.audio.exists() and not local.audio.parent.exists()  # removed after decoding
    store.discard_audio(key)
    with pytest.raises(DataMissing, match="audio is not in storage"), store.job_files(key, 0):
        pass


def test_results_are_published_whole_and_missing_ones_are_none(store: ObjectStore) -> None:
    key = new_key()
    assert store.read_result(key) is None and not store.has_result(key)
    store.write_result(key, {"text": "première", "segments": [segment(0)]})
    assert store.has_result(key)
    assert store.read_result(key) == {"text": "première", "segments": [segment(0)]}
    store.write_result(key, {"text": "second"})
    assert store.read_result(key) == {"text": "second"}
    store.discard_result(key)
    assert store.read_result(key) is None


def test_partial_transcripts_one_object_per_window_with_the_readers_cursor(store: ObjectStore) -> None:
    key = new_key()
    cursor = PartialCursor()
    assert store.read_partial(key, 1, cursor) == []
    store.append_partial(key, 1, [segment(0), segment(1)])
    store.append_partial(key, 1, [segment(2)])
    assert store.read_partial(key, 1, cursor) == [segment(0), segment(1), segment(2)]
    assert store.read_partial(key, 1, cursor) == []  # nothing new
    store.append_partial(key, 1, [segment(3)])
    assert store.read_partial(key, 1, cursor) == [segment(3)]
    assert store.read_partial(key, 1) == [segment(i) for i in range(4)]  # a new reader: all of it
    # A re-run shows the run before it until it catches up, then its own.
    store.append_partial(key, 2, [segment(0)])
    assert store.read_partial(key, 2) == [segment(i) for i in range(4)]
    store.append_partial(key, 2, [segment(i) for i in range(1, 5)])
    assert store.read_partial(key, 2) == [segment(i) for i in range(5)]
    store.discard_partial(key)
    assert store.read_partial(key, 2) == []


def test_a_kept_recording_goes_up_outlives_the_jobs_audio_and_goes_with_its_result(store: ObjectStore) -> None:
    key = new_key()
    assert store.read_recording(key) is None
    sink = store.incoming_file(2**30, 0)
    data = os.urandom(PART_BYTES + 1000)  # two parts each way
    sink.write(data)
    scratch = sink.finish().path
    store.keep_recording(key, scratch)
    assert not scratch.exists()  # sent on: the local folder is scratch
    store.discard_audio(key)
    store.sweep_audio(set(), grace_seconds=0)  # not the job's input audio: its end leaves it
    pieces = store.read_recording(key)
    assert pieces is not None and b"".join(pieces) == data
    store.discard_recording(key)
    assert store.read_recording(key) is None


def test_chunked_uploads_in_any_order_overlapping_then_assembled(store: ObjectStore) -> None:
    upload_id = new_key()
    data = os.urandom(10_000)
    store.create_upload(upload_id)
    for start, end in [(6000, 10_000), (0, 4000), (3000, 7000)]:  # the last one overlaps both
        store.write_upload(upload_id, start, data[start:end])
    assert store.read_upload(upload_id, 2000, 8000) == data[2000:8000]
    stored = store.assemble_upload(upload_id, len(data))
    assert stored.path.read_bytes() == data and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.path.parent == store.root / "incoming"
    store.discard(stored.path)
    assert store.assemble_upload(upload_id, len(data)).size == len(data)  # kept until discarded
    store.discard_upload(upload_id)
    assert store.read_upload(upload_id, 0, 4) == bytes(4)  # nothing left


def test_sweeps_remove_what_no_job_or_upload_owns(store: ObjectStore) -> None:
    mine, litter = new_key(), new_key()
    for key in (mine, litter):
        upload = store.incoming_file(100, 0)
        upload.write(b"audio")
        store.accept(upload.finish(), key)
        store.write_references(key, [b"voice"])
        store.write_upload(key, 0, b"chunk")
    store.sweep_audio({mine}, grace_seconds=3600)  # too fresh: another replica may be writing
    with store.job_files(litter, 1):
        pass
    store.sweep_audio({mine}, grace_seconds=0)
    store.sweep_uploads({mine}, grace_seconds=0)
    with store.job_files(mine, 1):
        pass
    with pytest.raises(DataMissing), store.job_files(litter, 0):
        pass
    assert store.read_upload(mine, 0, 5) == b"chunk" and store.read_upload(litter, 0, 5) == bytes(5)


def test_an_unreachable_store_is_a_503_in_words_within_seconds(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    from whisper_mcp.testing import free_port

    env = {**seaweedfs.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    store = ObjectStore(connect("s3://nowhere-bucket/x", environ=env), tmp_path / "scratch")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        store.read_result(new_key())
    assert time.monotonic() - started < 8
    assert caught.value.status_code == 503 and "object store is not available" in caught.value.message
    with pytest.raises(StorageUnavailable):
        store.append_partial(new_key(), 1, [segment(0)])


def test_what_one_replica_stores_another_reads(seaweedfs: SeaweedFS, bucket_url: str, tmp_path: Path) -> None:
    """Three stores on one bucket prefix, each with its own scratch folder, as
    replicas on separate machines have them."""
    url = f"{bucket_url}/{new_key()}"
    a, b, c = (ObjectStore(connect(url, environ=seaweedfs.env), tmp_path / name) for name in "abc")
    key = new_key()
    sink = a.incoming_file(1000, 0)
    sink.write(b"the audio")
    a.accept(sink.finish(), key)
    a.write_references(key, [b"alex's voice"])
    with b.job_files(key, 1) as local:  # the replica that runs the job
        assert local.audio.read_bytes() == b"the audio" and local.references[0].read_bytes() == b"alex's voice"
        b.append_partial(key, 1, [segment(0)])
        assert c.read_partial(key, 1) == [segment(0)]
        b.write_result(key, {"text": "done"})
    assert c.read_result(key) == {"text": "done"}
    c.discard_audio(key)  # the job ended, told on a third replica
    with pytest.raises(DataMissing), a.job_files(key, 1):
        pass

    upload_id = new_key()
    a.write_upload(upload_id, 4, b"5678")  # chunks through two replicas,
    b.write_upload(upload_id, 0, b"1234")
    assert c.assemble_upload(upload_id, 8).path.read_bytes() == b"12345678"  # taken on a third


def test_a_bucket_that_cannot_be_used_stops_start_up_in_one_sentence(
    seaweedfs: SeaweedFS, bucket_url: str, tmp_path: Path
) -> None:
    ObjectStore(connect(bucket_url, environ=seaweedfs.env), tmp_path / "ok").check()
    missing = ObjectStore(connect("s3://no-such-bucket-here/x", environ=seaweedfs.env), tmp_path / "missing")
    with pytest.raises(ValueError, match="^the bucket of --storage-url cannot be used: NoSuchBucket$"):
        missing.check()


MEMORY_PROBE = """
import os, resource, sys
from pathlib import Path
from whisper_mcp.queue.files import new_key
from whisper_mcp.queue.objects import ObjectStore, connect
store = ObjectStore(connect(sys.argv[1]), Path(sys.argv[2]))
sink = store.incoming_file(2**31, 0)
block = os.urandom(2**20)
for _ in range(int(sys.argv[3])):
    sink.write(block)
upload = sink.finish()
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
key = new_key()
store.accept(upload, key)
with store.job_files(key, 0) as local:
    assert local.audio.stat().st_size == upload.size
print(peak() - before)
"""


def test_memory_does_not_grow_with_the_file(seaweedfs: SeaweedFS, bucket_url: str, tmp_path: Path) -> None:
    """160 MiB up to the bucket and back to a scratch file, in a fresh
    interpreter: its peak memory grows by the parts in flight, not the file."""
    import subprocess
    import sys

    size_mb = 160
    env = {**os.environ, **seaweedfs.env}
    probe = [sys.executable, "-c", MEMORY_PROBE, f"{bucket_url}/{new_key()}", str(tmp_path / "scratch"), str(size_mb)]
    done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    assert grown < size_mb * 2**20 / 2, f"peak memory grew {grown >> 20} MiB moving a {size_mb} MiB file"
