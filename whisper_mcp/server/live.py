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
from whisper_mcp.engines import windows
from whisper_mcp.engines.base import BatchItem, Engine, Transcription
from whisper_mcp.engines.vad import SpeechProbabilities
from whisper_mcp.errors import ServiceError
from whisper_mcp.logs import job_event
from whisper_mcp.queue.files import new_key
from whisper_mcp.queue.jobs import Job, JobRequest
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.server.live_recording import LiveRecording
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.sharing import InferenceGate

log = logging.getLogger("whisper_mcp.server.live")

SAMPLE_RATE = 16000
# Threads for live decodes: the one decoding and the next, ready when it
# ends; for the last decodes of utterances, and apart from them, for the
# decodes of utterances still growing (so these never hold up those).
LIVE_THREADS = 2
PARTIAL_THREADS = 1

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
    recording: LiveRecording | None = None  # its audio, if the client asked to keep it

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
        self,
        settings: Settings,
        queue: JobQueue,
        engine: Engine,
        gate: InferenceGate,
        check: LiveCheck,
        metrics: Metrics | None = None,
    ) -> None:
        self._queue = queue
        self.metrics = metrics or Metrics()
        self._engine = engine
        self._gate = gate
        self._check = check
        self.max_sessions = settings.max_realtime_sessions or default_max_sessions()
        self._lock = threading.Lock()
        self.open_sessions = 0
        # Live decodes run one at a time (the gate): the others wait here, in
        # turn, rather than each holding a worker thread the app needs.
        self._decoders: dict[bool, anyio.CapacityLimiter] = {}  # partial? -> its threads

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
        self.metrics.realtime_sessions.inc()

    def leave(self) -> None:
        with self._lock:
            self.open_sessions -= 1
        self.metrics.realtime_sessions.dec()

    # -- decoding ------------------------------------------------------------

    def request(
        self, model: str | None, language: str | None, prompt: str | None, hotwords: str | None, words: bool
    ) -> JobRequest:
        """The model and options a session's decodes use; ``ServiceError`` saying what is wrong."""
        request = self._check(model, language, prompt, hotwords, words)
        # Identifying the language before every decode would double its cost:
        # a session names its language, a multilingual model detects it, or
        # (language routing) the session identifies it until it is sure and
        # then keeps to it (``RealtimeSession``). An English-only model named
        # with no language is not identified: it is what the client chose.
        identify = request.options.identify_with if request.options.reroute else None
        options = replace(request.options, identify_with=identify, reroute=identify is not None, vad_filter=False)
        return replace(request, options=options, filename="live transcription")

    async def decode(
        self, samples: np.ndarray, request: JobRequest, *, partial: bool = False, quick: bool = False
    ) -> Transcription:
        """Decode 16 kHz ``samples`` on the shared model, off the event loop.
        ``partial``: an utterance still growing, decoded once at temperature
        0 (its cut-off last word would often set off the fallback's
        decodes), with the beam its last decode will use: what two such
        decodes agree on is sent for good, and greedy ones agreed on words
        the last decode heard otherwise (live WER 11.0 % against 7.6 % for
        the same utterances decoded alone, bench/README.md).
        ``quick`` (partial only): the engine's quick guess (``Engine.guess``:
        greedy, the audio not padded to a 30 s window, where the engine
        allows), for an utterance's first words: a fraction of the cost on a
        short one, but a little less sure of its words than a decode of the
        window."""
        options = request.options
        if partial:
            temperature = 0.0 if options.temperature is None else options.temperature
            options = replace(options, temperature=temperature, beam_size=1 if quick else options.beam_size)

        def run() -> Transcription:
            info = self._engine.registry.resolve(request.model, trusted=True)
            with self._gate.live(urgent=not partial):
                if partial and quick:
                    return self._engine.guess(samples, info, options)
                item = BatchItem(samples, duration_hint=len(samples) / SAMPLE_RATE)
                with windows.padded():  # live accuracy was measured on 30 s windows
                    outcome = self._engine.transcribe_batch([item], info, options)[0]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        if partial not in self._decoders:  # made on the event loop that uses it
            self._decoders[partial] = anyio.CapacityLimiter(PARTIAL_THREADS if partial else LIVE_THREADS)
        return await to_thread.run_sync(run, limiter=self._decoders[partial])

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
                kept.job = self._start(request)
            self._queue.live_utterance(kept.job, kept.segments[-1], kept.result(duration))

        await to_thread.run_sync(write)

    def _start(self, request: JobRequest) -> Job:
        return self._queue.start_live(replace(request, job_id=new_key(), key=new_key()))

    def recording(self) -> LiveRecording:
        """A session's audio, to keep (``store=audio``)."""
        return LiveRecording(self._queue.files, self._queue.min_free_bytes)

    async def finish(self, kept: KeptSession, duration: float, request: JobRequest) -> str | None:
        """The session ended: its job completes, with its recording if one was
        kept (a job is made for a recording with no utterance). The job id, if one was kept."""
        recording = await kept.recording.finish() if kept.recording is not None else None
        try:
            if kept.job is None and recording is not None:
                kept.job = await to_thread.run_sync(self._start, request)
            job = kept.job
            if job is None:
                return None
            status = await to_thread.run_sync(
                self._queue.finish_live, job, kept.result(duration), kept.language, recording
            )
        finally:
            if recording is not None:  # still here if it could not be stored
                await to_thread.run_sync(self._queue.files.discard, recording)
        job_event(log, status, job.job_id, model=job.model, audio_seconds=round(duration, 3), live=True)
        return job.job_id


__all__ = ["KeptSession", "LiveTranscription", "TooManySessions", "default_max_sessions"]
