"""Storage in an S3 bucket (``--storage-url s3://bucket/prefix``), shared by
replicas that share nothing else but the job database.

Layout under the prefix (keys are server-made, as in ``files.py``)::

    audio/<key>                      accepted audio, until its job ends
    speakers/<key>/<n>.wav           known speakers' recordings of a job
    results/<key>.json               a transcript, published by one PUT
    recordings/<key>.wav             a live session's audio, kept at the client's request
    partial/<key>/<n>/<seq>.jsonl    segments attempt n appended, one object per window
    uploads/<id>/<start>-<end>       a chunked upload, one object per chunk

The local folder (``--storage``) holds only scratch files: uploads being
received (``incoming/``, checked before they go to the bucket) and audio
fetched for the decoder (``fetched/``, removed after). Uploads and
downloads stream in parts (``PART_BYTES``), so memory does not grow with the
file. A PUT of a whole object is atomic: a transcript is seen whole or not
at all.

The client is obstore (Rust's object_store): imported here only, and this
module only when a storage URL is set. Its timeouts are short and it retries
little, so a store that is away answers ``StorageUnavailable`` (503) in
seconds rather than holding requests.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError as ObjectStoreError

from whisper_mcp.errors import StorageUnavailable
from whisper_mcp.queue import partial
from whisper_mcp.queue.files import FileStore, IncomingFile, JobFiles, StoredUpload, audio_missing, new_key

if TYPE_CHECKING:
    from obstore.store import S3Store

log = logging.getLogger("whisper_mcp.queue.objects")

# Multipart uploads: parts of this size, this many in flight (memory ~ their product).
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
# A store that does not answer is reported within seconds: connecting, each
# read, and retries (with their pauses) are all bounded.
CONNECT_TIMEOUT = "2s"
READ_TIMEOUT = "5s"
REQUEST_TIMEOUT = "30min"  # a whole request: a long download streams within it
MAX_RETRIES = 2
RETRY_SECONDS = 5.0
# While the store is away, calls fail at once (503) and one probe every
# PROBE_SECONDS asks it, within PROBE_TIMEOUT, whether it is back.
PROBE_SECONDS = 0.5
PROBE_TIMEOUT = "1s"

_KEY = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = re.compile(r"^(\d+)-(\d+)$")
UNAVAILABLE = "The object store is not available right now; try again later."

T = TypeVar("T")


@dataclass(frozen=True)
class StorageUrl:
    bucket: str
    prefix: str  # "" or "some/prefix" (no slashes at either end)


def parse_url(url: str) -> StorageUrl:
    """``s3://bucket[/prefix]``, or ``ValueError`` saying what would do."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be s3://bucket or s3://bucket/prefix")
    return StorageUrl(parts.netloc, parts.path.strip("/"))


def connect(
    url: str, *, endpoint: str = "", region: str = "", environ: Mapping[str, str] | None = None, quick: bool = False
) -> S3Store:
    """A client for the bucket of ``url``. Endpoint, region and credentials
    default to the standard AWS variables (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). ``quick``: one try within a
    second (the probe that watches for a store's return)."""
    from obstore.store import S3Store

    env = os.environ if environ is None else environ
    where = parse_url(url)
    endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or ""
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    config: dict[str, str] = {"region": region}
    if endpoint:
        config["endpoint"] = endpoint
    for name, variable in (
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("session_token", "AWS_SESSION_TOKEN"),
    ):
        if env.get(variable):
            config[name] = env[variable]
    return S3Store(
        where.bucket,
        prefix=where.prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": PROBE_TIMEOUT if quick else CONNECT_TIMEOUT,
            "read_timeout": PROBE_TIMEOUT if quick else READ_TIMEOUT,
            "timeout": PROBE_TIMEOUT if quick else REQUEST_TIMEOUT,
        },
        retry_config={
            "max_retries": 0 if quick else MAX_RETRIES,
            "retry_timeout": datetime.timedelta(seconds=RETRY_SECONDS),
            "backoff": {
                "init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=1),
                "base": 2,
            },
        },
    )


@dataclass(frozen=True)
class _AttemptObjects:
    """One attempt's partial transcript: objects numbered 0, 1, ... in order
    of writing, read on from the number ``Seen.offset`` counts up to."""

    attempt: int
    store: ObjectStore
    prefix: str

    def advance(self, seen: partial.Seen) -> list[partial.Segment]:
        fresh: list[partial.Segment] = []
        while (data := self.store._get_or_none(f"{self.prefix}{seen.offset:08d}.jsonl")) is not None:
            segments = partial.parse(data)
            seen.offset += 1
            seen.count += len(segments)
            fresh.extend(segments)
        return fresh


class ObjectStore:
    """``Storage`` in an S3 bucket, with a local folder for scratch files."""

    def __init__(self, client: S3Store, scratch: Path, probe: S3Store | None = None) -> None:
        self._client = client
        self._probe = probe or client  # the quick client (``connect(quick=True)``) watching for a return
        self._local = FileStore(scratch)  # incoming/ and the disk checks, as without a bucket
        self._fetched = self._local.root / "fetched"
        self._fetched.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._next_window: dict[tuple[str, int], int] = {}  # (key, attempt) -> the next partial object's number
        self._away_since: float | None = None  # monotonic time of the first failure of an outage

    @property
    def root(self) -> Path:
        return self._local.root

    def check(self) -> None:
        """At start-up: ``ValueError`` in one sentence if the bucket cannot be
        listed (no such bucket, refused credentials, nothing answering)."""
        try:
            next(iter(obstore.list(self._client, prefix="results", chunk_size=1)), None)
        except ObjectStoreError as exc:
            text = str(exc)
            code = re.search(r"<Code>(\w+)</Code>", text)  # S3's own word for it: NoSuchBucket, AccessDenied
            reason = code[1] if code else (text.splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"the bucket of --storage-url cannot be used: {reason}") from None

    def check_available(self) -> None:
        """``StorageUnavailable`` now if the store is known to be away."""
        if self._away_since is not None:
            raise StorageUnavailable(UNAVAILABLE)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """One request; ``StorageUnavailable`` in words if the store fails it,
        at once while it is known to be away (``FileNotFoundError`` for a
        missing object passes through)."""
        self.check_available()
        try:
            return call()
        except FileNotFoundError:
            raise
        except ObjectStoreError as exc:
            self._away(what, exc)
            raise StorageUnavailable(UNAVAILABLE) from exc

    def _away(self, what: str, exc: BaseException) -> None:
        """An outage begins: one log line, and a probe that ends it."""
        with self._lock:
            if self._away_since is not None:
                return
            self._away_since = time.monotonic()
        log.warning("object store: %s failed: %s; answering 503 until it is back", what, str(exc).splitlines()[0])
        threading.Thread(target=self._watch, name="object-store-probe", daemon=True).start()

    def _watch(self) -> None:
        """Until the store answers again (a list of one object), then the outage ends."""
        while True:
            time.sleep(PROBE_SECONDS)
            try:
                next(iter(obstore.list(self._probe, prefix="results", chunk_size=1)), None)
            except ObjectStoreError:
                continue
            with self._lock:
                since, self._away_since = self._away_since or time.monotonic(), None
            log.warning("object store: answering again after %.1f s", time.monotonic() - since)
            return

    def _put(self, path: str, data: bytes | Path) -> None:
        self._call(
            f"writing {path}",
            lambda: obstore.put(self._client, path, data, chunk_size=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT),
        )

    def _get_or_none(self, path: str) -> bytes | None:
        try:
            return bytes(self._call(f"reading {path}", lambda: obstore.get(self._client, path).bytes()))
        except FileNotFoundError:
            return None

    def _download(self, path: str, target: Path) -> None:
        """Stream an object into a local file; ``FileNotFoundError`` if there is none."""

        def fetch() -> None:
            with open(target, "wb") as f:
                for chunk in obstore.get(self._client, path).stream(min_chunk_size=PART_BYTES):
                    f.write(chunk)

        try:
            self._call(f"reading {path}", fetch)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _list(self, prefix: str) -> list[tuple[str, float]]:
        """(path, last modified as a timestamp) of the objects under ``prefix``."""

        def collect() -> list[tuple[str, float]]:
            return [
                (meta["path"], meta["last_modified"].timestamp())
                for batch in obstore.list(self._client, prefix=prefix)
                for meta in batch
            ]

        return self._call(f"listing {prefix}", collect)

    def _delete(self, paths: Sequence[str]) -> None:
        if paths:
            self._call(f"deleting {paths[0]}...", lambda: obstore.delete(self._client, list(paths)))

    def _checked(self, key: str) -> str:
        if not _KEY.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return key

    # -- uploads arriving, and a job's audio ---------------------------------

    def incoming_file(self, max_bytes: int, min_free_bytes: int) -> IncomingFile:
        return self._local.incoming_file(max_bytes, min_free_bytes)

    def check_space(self, min_free_bytes: int, expected_bytes: int = 0) -> None:
        self._local.check_space(min_free_bytes, expected_bytes)

    def discard(self, path: Path) -> None:
        self._local.discard(path)

    def accept(self, upload: StoredUpload, key: str) -> None:
        self._put(f"audio/{self._checked(key)}", upload.path)  # multipart, streamed from the file
        self._local.discard(upload.path)

    def write_references(self, key: str, recordings: list[bytes]) -> None:
        for index, data in enumerate(recordings):
            self._put(f"speakers/{self._checked(key)}/{int(index)}.wav", data)

    @contextlib.contextmanager
    def job_files(self, key: str, speakers: int) -> Iterator[JobFiles]:
        key = self._checked(key)
        folder = self._fetched / f"{key}.{new_key()[:8]}"  # two runs of one job never share a file
        folder.mkdir()
        try:
            audio = folder / "audio"
            try:
                self._download(f"audio/{key}", audio)
            except FileNotFoundError:
                raise audio_missing(key) from None
            references = []
            for index in range(speakers):
                path = folder / f"{index}.wav"
                try:
                    self._download(f"speakers/{key}/{index}.wav", path)
                except FileNotFoundError:
                    raise audio_missing(key) from None
                references.append(path)
            yield JobFiles(audio, tuple(references))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def discard_audio(self, key: str) -> None:
        key = self._checked(key)
        self._delete([f"audio/{key}", *(path for path, _ in self._list(f"speakers/{key}"))])

    def sweep_audio(self, owned: set[str], grace_seconds: float) -> None:
        cutoff = time.time() - grace_seconds
        for folder in ("audio/", "speakers/"):
            self._delete(
                [
                    path
                    for path, modified in self._list(folder)
                    if path.split("/")[1] not in owned and modified <= cutoff
                ]
            )

    def sweep_incoming(self, grace_seconds: float) -> None:
        self._local.sweep_incoming(grace_seconds)
        self._local.remove_unowned(self._fetched, set(), grace_seconds)

    # -- transcripts ---------------------------------------------------------

    def write_result(self, key: str, result: dict[str, object], min_free_bytes: int = 0) -> None:
        self._put(f"results/{self._checked(key)}.json", json.dumps(result, ensure_ascii=False).encode())

    def read_result(self, key: str) -> dict[str, object] | None:
        data = self._get_or_none(f"results/{self._checked(key)}.json")
        return None if data is None else json.loads(data)

    def has_result(self, key: str) -> bool:
        path = f"results/{self._checked(key)}.json"
        try:
            self._call(f"looking up {path}", lambda: obstore.head(self._client, path))
        except FileNotFoundError:
            return False
        return True

    def discard_result(self, key: str) -> None:
        self._delete([f"results/{self._checked(key)}.json"])

    def keep_recording(self, key: str, path: Path) -> None:
        self._put(f"recordings/{self._checked(key)}.wav", path)  # multipart, streamed from the file
        self._local.discard(path)

    def read_recording(self, key: str) -> Iterator[bytes] | None:
        path = f"recordings/{self._checked(key)}.wav"
        try:
            found = self._call(f"reading {path}", lambda: obstore.get(self._client, path))
        except FileNotFoundError:
            return None
        return (bytes(chunk) for chunk in found.stream(min_chunk_size=PART_BYTES))

    def discard_recording(self, key: str) -> None:
        self._delete([f"recordings/{self._checked(key)}.wav"])

    def _partial_prefix(self, key: str, attempt: int) -> str:
        return f"partial/{self._checked(key)}/{int(attempt)}/"

    def append_partial(self, key: str, attempt: int, segments: Sequence[Mapping[str, object]]) -> None:
        # One run per (key, attempt), in this process: it numbers its own
        # windows; a failed PUT keeps its number for the next try.
        with self._lock:
            number = self._next_window.get((key, attempt), 0)
        data = b"".join(json.dumps(dict(s), ensure_ascii=False).encode() + b"\n" for s in segments)
        self._put(f"{self._partial_prefix(key, attempt)}{number:08d}.jsonl", data)
        with self._lock:
            self._next_window[(key, attempt)] = number + 1

    def read_partial(
        self, key: str, attempt: int, cursor: partial.PartialCursor | None = None
    ) -> list[dict[str, object]]:
        attempts = [_AttemptObjects(n, self, self._partial_prefix(key, n)) for n in range(int(attempt), 0, -1)]
        return partial.read(attempts, cursor or partial.PartialCursor())

    def discard_partial(self, key: str) -> None:
        key = self._checked(key)
        with self._lock:
            for done in [k for k in self._next_window if k[0] == key]:
                del self._next_window[done]
        self._delete([path for path, _ in self._list(f"partial/{key}")])

    # -- chunked uploads: one object per chunk, named by its byte range ------

    def _chunks(self, upload_id: str) -> list[tuple[int, int, str]]:
        found = []
        for path, _ in self._list(f"uploads/{self._checked(upload_id)}"):
            if match := _CHUNK.match(path.rsplit("/", 1)[-1]):
                found.append((int(match[1]), int(match[2]), path))
        return sorted(found)

    def create_upload(self, upload_id: str) -> None:
        self._checked(upload_id)  # nothing to make: chunks are objects of their own

    def write_upload(self, upload_id: str, offset: int, data: bytes) -> None:
        self._put(f"uploads/{self._checked(upload_id)}/{offset:012d}-{offset + len(data):012d}", data)

    def read_upload(self, upload_id: str, start: int, end: int) -> bytes:
        out = bytearray(end - start)
        for a, b, path in self._chunks(upload_id):
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                ranged = functools.partial(obstore.get_range, self._client, path, start=lo - a, end=hi - a)
                piece = self._call(f"reading {path}", ranged)
                out[lo - start : hi - start] = bytes(piece)
        return bytes(out)

    def assemble_upload(self, upload_id: str, size: int) -> StoredUpload:
        # Chunks may overlap (a chunk sent again, cut differently): the bytes
        # are the same, so each is written at its offset, in order.
        target = self._local.incoming / f"upload-{self._checked(upload_id)}-{new_key()[:8]}"
        try:
            with open(target, "wb") as f:
                for a, _b, path in self._chunks(upload_id):
                    data = self._get_or_none(path)
                    if data is None:
                        raise StorageUnavailable(UNAVAILABLE)  # listed a moment ago
                    f.seek(a)
                    f.write(data)
                f.truncate(size)
            digest = hashlib.sha256()
            with open(target, "rb") as f:
                while block := f.read(1024 * 1024):
                    digest.update(block)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return StoredUpload(target, size, digest.hexdigest())

    def discard_upload(self, upload_id: str) -> None:
        self._delete([path for _a, _b, path in self._chunks(upload_id)])

    def sweep_uploads(self, owned: set[str], grace_seconds: float) -> None:
        cutoff = time.time() - grace_seconds
        self._delete(
            [
                path
                for path, modified in self._list("uploads/")
                if path.split("/")[1] not in owned and modified <= cutoff
            ]
        )


__all__ = ["ObjectStore", "StorageUrl", "connect", "parse_url"]
