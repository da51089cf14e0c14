"""Files under the storage folder, named only by server-made keys: the
default ``Storage`` (``storage.py``); ``objects.py`` keeps the same in an S3
bucket for replicas on separate machines.

Layout::

    jobs.sqlite3          the job store
    incoming/             uploads being received (removed if not accepted)
    audio/<key>           accepted audio, until its job ends
    speakers/<key>.<n>.wav  known speakers' reference recordings of a job
                          (16 kHz mono WAV), kept and removed with its audio
    uploads/<key>         chunked uploads being assembled
    results/<key>.json    transcript with segments, written atomically
    recordings/<key>.wav  a live session's audio, kept at the client's request
                          (16 kHz mono 16-bit WAV), removed with the transcript
    partial/<key>.<n>.jsonl  segments decoded so far by attempt n of a running
                          job, one JSON line each, appended after each window
                          (partial.py; earlier releases: <key>.<n>.json)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from whisper_mcp.durable import fsync_dir, write_atomic
from whisper_mcp.errors import DataMissing, InsufficientStorage, PayloadTooLarge
from whisper_mcp.queue import partial

_KEY = re.compile(r"^[0-9a-f]{32}$")


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class JobFiles:
    """A job's audio and its known speakers' recordings as local files, for the decoder."""

    audio: Path
    references: tuple[Path, ...]


def audio_missing(key: str) -> DataMissing:
    return DataMissing(
        "The job's audio is not in storage (removed, or stored where this server does not look: "
        "replicas on separate machines need --storage-url); submit the file again."
    )


class IncomingFile:
    """An upload being written to ``incoming/`` as it arrives, hashed on the way.

    Enforces the size limit and the free-space floor on every write, so a
    too-large upload stops as soon as it crosses the line and nothing of it
    stays behind. Blocking: call ``write`` off the event loop.
    """

    def __init__(self, directory: Path, max_bytes: int, min_free_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._digest = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes:
            self.abort()
            raise PayloadTooLarge(
                f"The upload exceeds the limit of {self.max_bytes // 2**20} MiB. Split the recording or ask the "
                "operator to raise --max-upload-mb."
            )
        if shutil.disk_usage(self.path.parent).free - len(data) < self._min_free:
            self.abort()
            raise InsufficientStorage("The server is low on disk space; try again later.")
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def finish(self) -> StoredUpload:
        self._file.close()
        return StoredUpload(self.path, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def _move_durably(source: Path, target: Path) -> Path:
    """Rename ``source`` to ``target`` (same filesystem), its bytes and the name on disk before it returns."""
    with open(source, "rb") as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    fsync_dir(target.parent)
    return target


def _blocks(f: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    with f:
        while block := f.read(size):
            yield block


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.incoming = self.root / "incoming"
        self.audio_dir = self.root / "audio"
        self.results_dir = self.root / "results"
        self.uploads_dir = self.root / "uploads"
        self.partial_dir = self.root / "partial"
        self.speakers_dir = self.root / "speakers"
        self.recordings_dir = self.root / "recordings"
        for d in (
            self.root,
            self.incoming,
            self.audio_dir,
            self.results_dir,
            self.uploads_dir,
            self.partial_dir,
            self.speakers_dir,
            self.recordings_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)

    def check_available(self) -> None:
        """A local folder is never away (a full disk is reported where it is written)."""

    @property
    def database(self) -> Path:
        return self.root / "jobs.sqlite3"

    def _checked(self, key: str) -> str:
        # Keys come from new_key(); refuse anything else so no caller can turn
        # a string from outside into a path.
        if not _KEY.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return key

    def audio_path(self, key: str) -> Path:
        return self.audio_dir / self._checked(key)

    def upload_path(self, key: str) -> Path:
        return self.uploads_dir / self._checked(key)

    def result_path(self, key: str) -> Path:
        return self.results_dir / f"{self._checked(key)}.json"

    def incoming_file(self, max_bytes: int, min_free_bytes: int) -> IncomingFile:
        return IncomingFile(self.incoming, max_bytes, min_free_bytes)

    def check_space(self, min_free_bytes: int, expected_bytes: int = 0) -> None:
        """Refuse (507) before anything is written when the disk is nearly full."""
        if shutil.disk_usage(self.root).free - expected_bytes < min_free_bytes:
            raise InsufficientStorage("The server is low on disk space and accepts no uploads now; try again later.")

    def accept(self, upload: StoredUpload, key: str) -> Path:
        """Move an upload to its job's audio file, durably, before the job is queued."""
        return _move_durably(upload.path, self.audio_path(key))

    def recording_path(self, key: str) -> Path:
        return self.recordings_dir / f"{self._checked(key)}.wav"

    def keep_recording(self, key: str, path: Path) -> None:
        """Move a live session's audio (a local WAV, consumed) to its job's kept recording, durably."""
        _move_durably(path, self.recording_path(key))

    def read_recording(self, key: str) -> Iterator[bytes] | None:
        """The job's kept recording in blocks, or None if it has none."""
        try:
            f = open(self.recording_path(key), "rb")  # noqa: SIM115 -- closed by the generator
        except FileNotFoundError:
            return None
        return _blocks(f)

    def discard_recording(self, key: str) -> None:
        self.discard(self.recording_path(key))

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def reference_path(self, key: str, index: int) -> Path:
        return self.speakers_dir / f"{self._checked(key)}.{int(index)}.wav"

    def write_references(self, key: str, recordings: list[bytes]) -> None:
        """A job's known speakers' recordings, durably, before the job is stored
        (``discard_audio`` removes them with its audio)."""
        for index, data in enumerate(recordings):
            write_atomic(self.reference_path(key, index), data)

    @contextlib.contextmanager
    def job_files(self, key: str, speakers: int) -> Iterator[JobFiles]:
        audio = self.audio_path(key)
        if not audio.is_file():
            raise audio_missing(key)
        yield JobFiles(audio, tuple(self.reference_path(key, i) for i in range(speakers)))

    def discard_audio(self, key: str) -> None:
        """A job's audio and its known speakers' recordings."""
        self.discard(self.audio_path(key))
        for path in self.speakers_dir.glob(f"{self._checked(key)}.*"):
            path.unlink(missing_ok=True)

    def write_result(self, key: str, result: dict[str, object], min_free_bytes: int = 0) -> None:
        """Write a transcript atomically; ``InsufficientStorage`` (nothing
        written) if the disk would keep less than ``min_free_bytes`` free."""
        data = json.dumps(result, ensure_ascii=False).encode()
        if min_free_bytes and shutil.disk_usage(self.results_dir).free - len(data) < min_free_bytes:
            raise InsufficientStorage("The server is low on disk space and cannot save the transcript now.")
        write_atomic(self.result_path(key), data)

    def read_result(self, key: str) -> dict[str, object] | None:
        try:
            return json.loads(self.result_path(key).read_bytes())
        except FileNotFoundError:
            return None

    def partial_files(self, key: str, attempt: int) -> list[partial.AttemptFiles]:
        """Attempt ``attempt``'s partial transcript files and every earlier
        attempt's, latest first. One file per attempt: a run that lost its
        lease can never write into the segments of the run that took the job over."""
        key = self._checked(key)
        return [
            partial.AttemptFiles(n, self.partial_dir / f"{key}.{n}.jsonl", self.partial_dir / f"{key}.{n}.json")
            for n in range(int(attempt), 0, -1)
        ]

    def append_partial(self, key: str, attempt: int, segments: Sequence[Mapping[str, object]]) -> None:
        partial.append(self.partial_files(key, attempt)[0].lines, segments)

    def read_partial(
        self, key: str, attempt: int, cursor: partial.PartialCursor | None = None
    ) -> list[dict[str, object]]:
        """The segments attempt ``attempt`` has decoded; while a re-run has
        not caught up, those of the latest earlier attempt that has more.
        With ``cursor``: only those after the ones it has had (``partial.read``)."""
        return partial.read(self.partial_files(key, attempt), cursor or partial.PartialCursor())

    def discard_partial(self, key: str) -> None:
        for path in self.partial_dir.glob(f"{self._checked(key)}.*.json*"):
            path.unlink(missing_ok=True)

    def has_result(self, key: str) -> bool:
        return self.result_path(key).exists()

    def discard_result(self, key: str) -> None:
        self.discard(self.result_path(key))

    def sweep_audio(self, owned: set[str], grace_seconds: float) -> None:
        self.remove_unowned(self.audio_dir, owned, grace_seconds)
        self.remove_unowned(self.speakers_dir, owned, grace_seconds)

    def sweep_incoming(self, grace_seconds: float) -> None:
        self.remove_unowned(self.incoming, set(), grace_seconds)

    # -- chunked uploads: one file per upload, written at each chunk's offset

    def create_upload(self, upload_id: str) -> None:
        self.upload_path(upload_id).touch()

    def write_upload(self, upload_id: str, offset: int, data: bytes) -> None:
        with open(self.upload_path(upload_id), "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_upload(self, upload_id: str, start: int, end: int) -> bytes:
        with open(self.upload_path(upload_id), "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def assemble_upload(self, upload_id: str, size: int) -> StoredUpload:
        path = self.upload_path(upload_id)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
        # A second name in incoming/, where submissions take uploads from (and
        # remove them); the bytes stay under uploads/ for a retry until the job is queued.
        target = self.incoming / f"upload-{upload_id}-{new_key()[:8]}"
        try:
            os.link(path, target)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(path, target)
        os.utime(target)  # fresh, so no start-up sweep of incoming/ takes it for litter
        return StoredUpload(target, size, digest.hexdigest())

    def discard_upload(self, upload_id: str) -> None:
        self.upload_path(upload_id).unlink(missing_ok=True)

    def sweep_uploads(self, owned: set[str], grace_seconds: float) -> None:
        self.remove_unowned(self.uploads_dir, owned, grace_seconds)

    def remove_unowned(self, folder: Path, owned: set[str], grace_seconds: float = 0.0) -> None:
        """Remove entries of ``folder`` (audio/, speakers/, incoming/) whose
        name up to the first dot is not in ``owned``, and untouched for
        ``grace_seconds``: litter of processes that died
        (an upload half-received, audio whose job never got stored). With a
        grace, files another replica is writing right now are left alone."""
        cutoff = time.time() - grace_seconds
        for path in folder.iterdir():
            if path.name.split(".", 1)[0] in owned:
                continue
            try:
                if grace_seconds and path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass  # removed meanwhile
