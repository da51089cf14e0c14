"""The service's side of live transcription (``server.realtime``): how many
sessions may run, decoding on the shared model (``sharing.InferenceGate``:
live decodes first, batch jobs never starved), the voice detector, and
keeping a session's utterances as a job (``JobQueue.start_live``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import numpy as np
from anyio import to_thread

from whisper_mcp.config import Settings
from whisper_mcp.engines.base import BatchItem, Engine, Transcription
from whisper_mcp.engines.vad import SpeechProbabilities
from whisper_mcp.errors import ServiceError
from whisper_mcp.logs import job_event
from whisper_mcp.queue.files import new_key
from whisper_mcp.queue.jobs import Job, JobRequest
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.server.sharing import InferenceGate

log = logging.getLogger("whisper_mcp.server.live")

SAMPLE_RATE = 16000
# Threads for live decodes: the one decoding and the next, ready when it ends.
LIVE_THREADS = 2

# (model, language, prompt, hotwords, word timings) -> the request a live
# session's decodes use: the service's checks, as for a submission.
LiveCheck = Callable[[str | None, str | None, str | None, str | None, bool], JobRequest]


class TooManySessions(ServiceError):
    code = "session_limit_reached"
    status_code = 429


@dataclass
class KeptSession:
    """A live session stored as a job: its utterances as segments."""

    job: Job | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    language: str | None = None

    def result(self, duration: float) -> dict[str, Any]:
        return {
            "text": " ".join(s["text"] for s in self.segments if s["text"]),
            "language": self.language,
            "duration": round(duration, 3),
            "segments": self.segments,
        }


def default_max_sessions() -> int:
    return max(1, os.cpu_count() or 1)


class LiveTranscription:
    def __init__(
        self, settings: Settings, queue: JobQueue, engine: Engine, gate: InferenceGate, check: LiveCheck
    ) -> None:
        self._queue = queue
        self._engine = engine
        self._gate = gate
        self._check = check
        self.max_sessions = settings.max_realtime_sessions or default_max_sessions()
        self._lock = threading.Lock()
        self.open_sessions = 0
        # Live decodes run one at a time (the gate): the others wait here, in
        # turn, rather than each holding a worker thread the app needs.
        self._decoders: anyio.CapacityLimiter | None = None

    # -- admission ---------------------------------------------------------

    def admit(self) -> None:
        """Count a new session in; ``TooManySessions`` (in words) at the limit."""
        with self._lock:
            if self.open_sessions >= self.max_sessions:
                raise TooManySessions(
                    f"This server runs at most {self.max_sessions} live transcription session(s) at once "
                    "(--max-realtime-sessions) and all are in use; try again when one ends."
                )
            self.open_sessions += 1

    def leave(self) -> None:
        with self._lock:
            self.open_sessions -= 1

    # -- decoding ------------------------------------------------------------

    def request(
        self, model: str | None, language: str | None, prompt: str | None, hotwords: str | None, words: bool
    ) -> JobRequest:
        """The model and options a session's decodes use; ``ServiceError`` saying what is wrong."""
        request = self._check(model, language, prompt, hotwords, words)
        # Identifying the language before every decode would double its cost:
        # a session names its language, or the model detects it.
        options = replace(request.options, identify_with=None, reroute=False, vad_filter=False)
        return replace(request, options=options, filename="live transcription")

    async def decode(self, samples: np.ndarray, request: JobRequest, *, partial: bool = False) -> Transcription:
        """Decode 16 kHz ``samples`` on the shared model, off the event loop.
        ``partial``: an utterance still growing, decoded once at temperature 0
        (its cut-off last word would often set off the fallback's decodes)."""
        options = request.options
        if partial and options.temperature is None:
            options = replace(options, temperature=0.0)

        def run() -> Transcription:
            info = self._engine.registry.resolve(request.model, trusted=True)
            item = BatchItem(samples, duration_hint=len(samples) / SAMPLE_RATE)
            with self._gate.live():
                outcome = self._engine.transcribe_batch([item], info, options)[0]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        if self._decoders is None:
            self._decoders = anyio.CapacityLimiter(LIVE_THREADS)
        return await to_thread.run_sync(run, limiter=self._decoders)

    @staticmethod
    def detector() -> SpeechProbabilities:
        return SpeechProbabilities()

    @staticmethod
    async def speech(detector: SpeechProbabilities, samples: np.ndarray) -> np.ndarray:
        return await to_thread.run_sync(detector.push, samples)

    # -- keeping -------------------------------------------------------------

    async def keep(
        self, kept: KeptSession, request: JobRequest, segment: dict[str, Any], language: str | None, duration: float
    ) -> None:
        """Store a completed utterance (the job is made with the first)."""
        kept.segments.append({"id": len(kept.segments), **segment})
        kept.language = kept.language or language

        def write() -> None:
            if kept.job is None:
                kept.job = self._queue.start_live(replace(request, job_id=new_key(), key=new_key()))
            self._queue.live_utterance(kept.job, kept.segments[-1], kept.result(duration))

        await to_thread.run_sync(write)

    async def finish(self, kept: KeptSession, duration: float) -> str | None:
        """The session ended: its job completes. The job id, if one was kept."""
        job = kept.job
        if job is None:
            return None
        status = await to_thread.run_sync(self._queue.finish_live, job, kept.result(duration), kept.language)
        job_event(log, status, job.job_id, model=job.model, audio_seconds=round(duration, 3), live=True)
        return job.job_id


__all__ = ["KeptSession", "LiveTranscription", "TooManySessions", "default_max_sessions"]
