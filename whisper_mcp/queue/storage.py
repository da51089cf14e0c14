"""What the queue, the worker and the uploads need of storage, whichever
holds the bytes: the storage folder (``files.FileStore``, the default) or
an S3 bucket shared by replicas on separate machines (``objects.ObjectStore``,
``--storage-url``), which keeps only scratch files in the local folder.

Every method blocks (disk or network): call them off the event loop. An
object store that does not answer raises ``StorageUnavailable`` (503);
something the database says exists but storage lacks is ``DataMissing``,
never an empty success.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from whisper_mcp.queue.files import IncomingFile, JobFiles, StoredUpload
from whisper_mcp.queue.partial import PartialCursor


class Storage(Protocol):
    @property
    def root(self) -> Path:
        """The local folder: all of storage, or an object store's scratch space."""
        ...

    def check_available(self) -> None:
        """``StorageUnavailable`` at once while the storage is known to be away."""
        ...

    # -- uploads arriving, and a job's audio ---------------------------------

    def incoming_file(self, max_bytes: int, min_free_bytes: int) -> IncomingFile: ...

    def check_space(self, min_free_bytes: int, expected_bytes: int = 0) -> None: ...

    def discard(self, path: Path) -> None:
        """Remove a local file under ``incoming/`` (an upload that will not become a job)."""
        ...

    def accept(self, upload: StoredUpload, key: str) -> object:
        """Make an upload the job's audio, durably, before the job is queued."""
        ...

    def write_references(self, key: str, recordings: list[bytes]) -> None: ...

    def job_files(self, key: str, speakers: int) -> AbstractContextManager[JobFiles]:
        """The job's audio and ``speakers`` recordings as local files while
        the context is open; ``DataMissing`` if the audio is gone."""
        ...

    def discard_audio(self, key: str) -> None: ...

    def sweep_audio(self, owned: set[str], grace_seconds: float) -> None:
        """Remove audio and recordings of no job in ``owned``, untouched for ``grace_seconds``."""
        ...

    def sweep_incoming(self, grace_seconds: float) -> None: ...

    # -- transcripts ---------------------------------------------------------

    def write_result(self, key: str, result: dict[str, object], min_free_bytes: int = 0) -> None:
        """Publish a transcript atomically: a reader sees all of it or none."""
        ...

    def read_result(self, key: str) -> dict[str, object] | None: ...

    def has_result(self, key: str) -> bool: ...

    def discard_result(self, key: str) -> None: ...

    # -- a live session's audio, kept at the client's request ----------------

    def keep_recording(self, key: str, path: Path) -> None:
        """Make ``path`` (a 16 kHz mono 16-bit WAV under ``root``, consumed)
        the job's kept recording, durably: it stays when the job ends, like
        its transcript, and goes with it (``discard_recording``)."""
        ...

    def read_recording(self, key: str) -> Iterator[bytes] | None:
        """The job's kept recording in pieces, or None if it has none."""
        ...

    def discard_recording(self, key: str) -> None: ...

    def append_partial(self, key: str, attempt: int, segments: Sequence[Mapping[str, object]]) -> None: ...

    def read_partial(self, key: str, attempt: int, cursor: PartialCursor | None = None) -> list[dict[str, object]]: ...

    def discard_partial(self, key: str) -> None: ...

    # -- chunked uploads (uploads.py) ----------------------------------------

    def create_upload(self, upload_id: str) -> None: ...

    def write_upload(self, upload_id: str, offset: int, data: bytes) -> None: ...

    def read_upload(self, upload_id: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of an upload, all of which were received."""
        ...

    def assemble_upload(self, upload_id: str, size: int) -> StoredUpload:
        """The whole upload as a new file under ``incoming/``, hashed; the
        upload's own bytes stay until ``discard_upload``."""
        ...

    def discard_upload(self, upload_id: str) -> None: ...

    def sweep_uploads(self, owned: set[str], grace_seconds: float) -> None: ...


__all__ = ["JobFiles", "Storage"]
