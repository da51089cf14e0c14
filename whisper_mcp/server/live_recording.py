"""A live session's audio, kept when the client asks (``store=audio``): the
16 kHz samples the session decoded, appended as they arrive to a scratch WAV
under storage's ``incoming/`` (swept at start-up if the server dies before
the session ends), about a second at a time and off the event loop, so the
session never holds it whole. At the end it becomes the job's kept recording
(``JobQueue.finish_live``)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
from anyio import to_thread

from whisper_mcp.errors import ServiceError
from whisper_mcp.queue.files import IncomingFile
from whisper_mcp.queue.storage import Storage

log = logging.getLogger("whisper_mcp.server.live")

SAMPLE_RATE = 16000
SAMPLE_BYTES = 2
# Samples are written in batches of about this long: one thread hop each.
FLUSH_SECONDS = 1.0
HEADER_BYTES = 44
# A WAV counts its bytes in 32 bits: about 37 hours of 16 kHz audio.
MAX_BYTES = 2**32 - 1


def wav_header(samples: int) -> bytes:
    """The 44-byte header of a 16 kHz mono 16-bit PCM WAV of ``samples`` samples."""
    data = samples * SAMPLE_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", HEADER_BYTES - 8 + data, b"WAVE", b"fmt ", 16, 1, 1,
        SAMPLE_RATE, SAMPLE_RATE * SAMPLE_BYTES, SAMPLE_BYTES, 8 * SAMPLE_BYTES, b"data", data,
    )  # fmt: skip


def pcm16(samples: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] as 16-bit little-endian PCM, rounded to the nearest step."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class LiveRecording:
    def __init__(self, storage: Storage, min_free_bytes: int = 0) -> None:
        self._storage = storage
        self._min_free = min_free_bytes
        self._file: IncomingFile | None = None
        self._pending: list[bytes] = []
        self._pending_samples = 0
        self.samples = 0  # written or pending
        self._stopped = False  # writing failed, or the WAV is full: no more is kept

    async def add(self, samples: np.ndarray) -> None:
        if self._stopped or not len(samples):
            return
        if HEADER_BYTES + (self.samples + len(samples)) * SAMPLE_BYTES > MAX_BYTES:
            log.warning("live recording: full after %.0f s; the rest of the session's audio is not kept", self.seconds)
            self._stopped = True
            return
        self._pending.append(pcm16(samples))
        self._pending_samples += len(samples)
        self.samples += len(samples)
        if self._pending_samples >= FLUSH_SECONDS * SAMPLE_RATE:
            await self._flush()

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    async def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_samples = 0
        try:
            await to_thread.run_sync(self._write, data)
        except (OSError, ServiceError) as exc:  # a full disk: the session goes on, unrecorded
            log.warning("live recording: could not write the session's audio (%s); it is not kept", exc)
            self._stopped = True
            await self.discard()

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._storage.incoming_file(MAX_BYTES, self._min_free)
            self._file.write(wav_header(0))  # its sizes are set at the end
        self._file.write(data)

    async def finish(self) -> Path | None:
        """The recording as a complete WAV (a local file for ``Storage.keep_recording``);
        None if nothing was recorded, or writing it failed."""
        if self._pending and not self._stopped:
            await self._flush()
        if self._file is None:
            return None
        return await to_thread.run_sync(self._close, self._file)

    def _close(self, file: IncomingFile) -> Path:
        path = file.finish().path
        with open(path, "r+b") as f:
            samples = (f.seek(0, 2) - HEADER_BYTES) // SAMPLE_BYTES
            f.seek(0)
            f.write(wav_header(samples))
        return path

    async def discard(self) -> None:
        """Remove the scratch file (the session kept no job, or its job could not take it)."""
        file, self._file = self._file, None
        if file is not None:
            await to_thread.run_sync(file.abort)


__all__ = ["LiveRecording", "pcm16", "wav_header"]
