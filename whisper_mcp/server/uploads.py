"""Uploads that keep audio bytes out of an agent's output: chunked MCP uploads
and one-time upload URLs for ``curl``.

State lives in the upload store; bytes live in storage (``uploads/<id>`` in
the storage folder, or one object per chunk in a bucket) until the upload
becomes a job (or expires).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict
from typing import Any

from anyio import to_thread

from whisper_mcp.errors import Conflict, InvalidInput, PayloadTooLarge, UploadNotFound
from whisper_mcp.queue.files import StoredUpload, new_key
from whisper_mcp.queue.jobs import UploadRecord
from whisper_mcp.queue.manager import ORPHAN_GRACE_SECONDS
from whisper_mcp.queue.storage import Storage
from whisper_mcp.queue.store import SQLUploadStore

# Decoded bytes per upload_chunk call: base64 makes it 4/3 larger, still well
# under the MCP SDK's 4 MiB request cap.
MAX_CHUNK_BYTES = 2 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")  # as new_key() makes them


def merge_range(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Add [start, end) to sorted, disjoint ranges, merging neighbours."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, (start, end)]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def overlaps(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    return [(max(a, start), min(b, end)) for a, b in ranges if a < end and start < b]


def missing(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    gaps, pos = [], 0
    for a, b in ranges:
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    if pos < size:
        gaps.append((pos, size))
    return gaps


class UploadManager:
    def __init__(
        self, store: SQLUploadStore, files: Storage, *, max_bytes: int, min_free_bytes: int, ttl: float
    ) -> None:
        self._store = store
        self._files = files
        self._max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._ttl = ttl

    # -- chunked ----------------------------------------------------------

    async def begin(self, filename: str | None, size: int | None, sha256: str | None) -> dict[str, Any]:
        if size is not None and size <= 0:
            raise InvalidInput("size must be the file's size in bytes, more than 0.")
        if size is not None and size > self._max_bytes:
            raise PayloadTooLarge(f"size {size} exceeds the upload limit of {self._max_bytes // 2**20} MiB.")
        digest = None
        if sha256 is not None and sha256.strip():
            digest = sha256.strip().lower()
            if not _SHA256.match(digest):
                raise InvalidInput("sha256 must be 64 hexadecimal characters (the SHA-256 of the whole file).")
        await to_thread.run_sync(self._files.check_space, self._min_free, size or 0)
        now = time.time()
        record = UploadRecord(
            upload_id=new_key(),
            kind="chunked",
            secret_hash=None,
            filename=(filename or None) and filename[:255],
            size=size,
            sha256=digest,
            submission=None,
            ranges=[],
            state="open",
            created_at=now,
            expires_at=now + self._ttl,
        )
        await to_thread.run_sync(self._create_chunked, record)
        return {
            "upload_id": record.upload_id,
            "max_chunk_bytes": MAX_CHUNK_BYTES,
            "expires_at": record.expires_at,
            "next": "Send the file in order with upload_chunk(upload_id, offset, data_base64), "
            f"at most {MAX_CHUNK_BYTES} bytes per chunk, then transcribe_wav(upload_id=...).",
        }

    def _create_chunked(self, record: UploadRecord) -> None:
        self._files.create_upload(record.upload_id)
        self._store.create(record)

    async def _open(self, upload_id: str, kind: str) -> UploadRecord:
        # The id's shape first: nothing is looked up, kept or logged for a
        # string that cannot be an id this service made (a 2.5 MB one, say).
        record = None
        if isinstance(upload_id, str) and _UPLOAD_ID.match(upload_id):
            record = await to_thread.run_sync(self._store.get, upload_id)
        if record is None or record.kind != kind or record.expires_at <= time.time():
            shown = upload_id if len(upload_id) <= 64 else upload_id[:32] + "..."
            raise UploadNotFound(
                f"No open upload {shown!r}: it never existed, has expired or was already used. "
                "Start again with begin_upload."
            )
        if record.state != "open":
            raise Conflict(
                f"The upload {upload_id!r} is being submitted by another request. Check its job, or wait a "
                "moment: if that submission fails the upload can be submitted again."
            )
        return record

    async def chunk(self, upload_id: str, offset: int, data: bytes) -> dict[str, Any]:
        if not data:
            raise InvalidInput("The chunk is empty.")
        if len(data) > MAX_CHUNK_BYTES:
            raise PayloadTooLarge(f"A chunk may hold at most {MAX_CHUNK_BYTES} bytes, this one has {len(data)}.")
        if offset < 0:
            raise InvalidInput("offset must be 0 or more.")
        record = await self._open(upload_id, "chunked")
        end = offset + len(data)
        limit = record.size if record.size is not None else self._max_bytes
        if end > limit:
            what = "the declared size" if record.size is not None else "the upload limit"
            raise InvalidInput(f"This chunk ends at byte {end}, past {what} of {limit} bytes.")
        await to_thread.run_sync(self._write_chunk, record, offset, data)
        # The ranges merge in the database, in one transaction: chunks of one
        # upload may arrive at several replicas at once.
        ranges = await to_thread.run_sync(
            self._store.add_range, upload_id, offset, end, time.time() + self._ttl, merge_range
        )
        if ranges is None:
            raise UploadNotFound(f"The upload {upload_id!r} was finished or expired while this chunk arrived.")
        received = sum(b - a for a, b in ranges)
        answer: dict[str, Any] = {"upload_id": upload_id, "received_bytes": received}
        if record.size is not None:
            gaps = missing(ranges, record.size)
            answer["complete"] = not gaps
            answer["missing"] = [list(g) for g in gaps[:10]]
        return answer

    def _write_chunk(self, record: UploadRecord, offset: int, data: bytes) -> None:
        end = offset + len(data)
        # Re-sent data is fine; different data for bytes already received is not.
        for a, b in overlaps(record.ranges, offset, end):
            if self._files.read_upload(record.upload_id, a, b) != data[a - offset : b - offset]:
                raise Conflict(
                    f"Bytes {a}-{b} were already received with different content. "
                    "Resend the chunk with the original data, or start a new upload."
                )
        self._files.check_space(self._min_free, len(data))
        self._files.write_upload(record.upload_id, offset, data)

    async def take(self, upload_id: str) -> tuple[StoredUpload, str | None]:
        """A complete chunked upload, checksum verified, as an upload ready to
        submit. It stays reserved (not open to chunks or another submission)
        until ``consumed`` once its job is queued, or ``release``d for a retry
        when the submission fails."""
        record = await self._open(upload_id, "chunked")
        stored = await to_thread.run_sync(self._finish_chunked, record)
        return stored, record.filename

    def _finish_chunked(self, record: UploadRecord) -> StoredUpload:
        received = record.ranges[0][1] if len(record.ranges) == 1 and record.ranges[0][0] == 0 else None
        size = record.size if record.size is not None else received
        gaps = missing(record.ranges, size) if size is not None else [(0, 0)]
        if size is None or gaps:
            shown = ", ".join(f"{a}-{b}" for a, b in gaps[:5]) if size is not None else "the bytes between chunks"
            raise InvalidInput(f"The upload is incomplete: missing bytes {shown}. Send them with upload_chunk.")
        stored = self._files.assemble_upload(record.upload_id, size)
        if record.sha256 is not None and stored.sha256 != record.sha256:
            self._files.discard(stored.path)
            self._store.delete(record.upload_id)
            self._files.discard_upload(record.upload_id)
            raise InvalidInput(
                "Checksum mismatch: the received bytes do not have the sha256 given to begin_upload. "
                "The upload was discarded; start again."
            )
        # Taking the record is the claim: of two requests finishing the same
        # upload (on one replica or two), one gets it.
        if not self._store.take(record.upload_id, time.time()):
            self._files.discard(stored.path)
            raise UploadNotFound(f"The upload {record.upload_id!r} was already submitted or has expired.")
        return stored

    async def consumed(self, upload_id: str) -> None:
        """The upload became a job: remove it and its bytes."""
        await to_thread.run_sync(self._consumed, upload_id)

    def _consumed(self, upload_id: str) -> None:
        self._store.delete(upload_id)
        self._files.discard_upload(upload_id)

    async def release(self, upload_id: str) -> None:
        """A submission failed (bad options, bad body): open the upload or
        one-time URL again, for a retry until it expires."""
        await to_thread.run_sync(self._store.release, upload_id)

    # -- one-time URLs ----------------------------------------------------

    async def create_url(self, submission: dict[str, Any]) -> tuple[str, UploadRecord]:
        """A new one-time upload; returns the URL secret (shown once) and the record."""
        secret = secrets.token_urlsafe(32)
        now = time.time()
        record = UploadRecord(
            upload_id=new_key(),
            kind="url",
            secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
            filename=submission.get("filename"),
            size=None,
            sha256=None,
            submission=json.dumps(submission),
            ranges=[],
            state="open",
            created_at=now,
            expires_at=now + self._ttl,
        )
        await to_thread.run_sync(self._store.create, record)
        return secret, record

    async def claim_url(self, secret: str) -> tuple[str, dict[str, Any]]:
        """Use a one-time URL: its upload id and the submission stored with it.
        ``consumed`` once the job is queued, ``release`` if the upload fails."""
        record = await to_thread.run_sync(self._store.claim, hashlib.sha256(secret.encode()).hexdigest(), time.time())
        if record is None:
            raise UploadNotFound(
                "This upload URL is unknown, expired, already used or receiving an upload right now. "
                "Ask for a new one with create_upload_url."
            )
        return record.upload_id, json.loads(record.submission or "{}")

    async def url_for_job(self, job_id: str) -> UploadRecord | None:
        """The one-time URL issued for ``job_id`` that has not expired: an open one
        if there is one, else a used one (its upload arriving, or refused); the
        newest first. None if the service issued none."""
        return await to_thread.run_sync(self._url_for_job, job_id, time.time())

    def _url_for_job(self, job_id: str, now: float) -> UploadRecord | None:
        # Unexpired URLs are few (they expire after the upload TTL), and this
        # runs only for a job id that has no job: no index on the JSON needed.
        found = [record for record in self._store.urls(now) if _submitted_job_id(record) == job_id]
        return max(found, key=lambda r: (r.state == "open", r.created_at), default=None)

    # -- housekeeping -----------------------------------------------------

    def sweep(self, now: float) -> int:
        """Blocking: drop expired uploads with their bytes, and bytes no upload
        owns once untouched for ``ORPHAN_GRACE_SECONDS``: another request, here
        or on another replica, may be between creating an upload's file and
        recording it, or between taking an upload and moving its file."""
        expired = self._store.expire(now)
        for upload_id in expired:
            self._files.discard_upload(upload_id)
        self._files.sweep_uploads(self._store.ids(), ORPHAN_GRACE_SECONDS)
        return len(expired)


def submission_dict(submission: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(submission).items() if v is not None}


def _submitted_job_id(record: UploadRecord) -> str | None:
    try:
        return json.loads(record.submission or "{}").get("job_id")
    except ValueError:
        return None
