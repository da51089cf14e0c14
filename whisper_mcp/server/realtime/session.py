"""One live transcription session: the client's events in, the server's out.

Audio is converted to 16 kHz as it arrives (``audio``), and kept too when
the client asked (``store=audio``: ``live_recording``). With server VAD the
voice detector's frames mark where speech starts and stops (``turns``); a
stop commits the utterance. Without it, the client commits. While an
utterance grows it is decoded again every ``DECODE_STEP_SECONDS`` of new
audio (at temperature 0: ``LiveTranscription.decode``; until its first
words are sent, as the engine's quick guess), and the words two guesses agree on go
out as deltas (``agreement``); its decode at commit sends the rest and
completes it. Once the utterance's first words are sent, the step grows to ``SETTLED_STEP_SECONDS``, or to
``PARTIAL_COST_FACTOR`` times what the latest guess took (the wait for the
model included) if longer, so that guesses keep the model busy about half
the time at most, a commit's decode seldom waits long for one in progress,
and two guesses a moment apart seldom agree on a word that the audio after
it would have changed; before that, to the time it took, so that the first
words come as soon as two guesses can agree on them.

With server VAD, an utterance ends once ``silence_duration_ms`` of silence
followed it, and its audio ends where that silence began. So once a pause has
lasted ``SPECULATE_AFTER_MS``, the utterance's last decode starts at once, on
the audio up to the pause (a ``Speculation``): when the end is declared, the
same audio is committed and that decode's result, ready or nearly, completes
it. Speech that resumes cancels it; the partial decodes then go on.

One task decodes, in order: committed utterances first (their completed
transcripts are never dropped), then the utterance in progress, from its
latest audio only. When decoding falls behind, the in-between decodes are
skipped (fewer, later deltas) and the session says how far behind it is
(``whisper_mcp.lag``), at most every ``LAG_REPORT_SECONDS``.

A session that names neither model nor language, on a server that routes
languages, is decoded as a queued job is: its language identified by the
multilingual model, English kept on the English-only model, another language
decoded by the multilingual one. Once a decode of at least ``PIN_SECONDS``
is sure of the language (``PIN_SURE``), or an utterance that long completes,
the session keeps to that language and identifies no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_mcp.engines.base import Transcription
from whisper_mcp.engines.vad import FRAME, SpeechProbabilities
from whisper_mcp.errors import INTERNAL_ERROR, ServiceError
from whisper_mcp.queue.jobs import JobRequest
from whisper_mcp.server.live import KeptSession, LiveTranscription
from whisper_mcp.server.realtime import protocol
from whisper_mcp.server.realtime.agreement import LocalAgreement, Word, words_of
from whisper_mcp.server.realtime.audio import SAMPLE_RATE, Decoder
from whisper_mcp.server.realtime.protocol import ProtocolError, SessionConfig
from whisper_mcp.server.realtime.turns import Turns

log = logging.getLogger("whisper_mcp.server.realtime")

DECODE_STEP_SECONDS = 0.3
SETTLED_STEP_SECONDS = 0.6
# Two guesses agree on words only when this much audio apart (see agreement).
AGREEMENT_SPAN_SAMPLES = int(SETTLED_STEP_SECONDS * SAMPLE_RATE)
PARTIAL_COST_FACTOR = 2.0
# An utterance is decoded as it grows up to this long (one decoding window);
# server VAD commits one that goes on longer, at the latest here.
MAX_PARTIAL_SECONDS = 30.0
# Server VAD commits speech that goes on past this at its first pause (of
# SPECULATE_AFTER_MS), and carries on in a new item.
SPLIT_AFTER_SECONDS = 25.0
# A pause within a turn this long starts the utterance's last decode, in
# case it is the end (long enough to pass over the gaps between words).
SPECULATE_AFTER_MS = 150
# A commit needs at least this much audio (OpenAI's rule).
MIN_COMMIT_SECONDS = 0.1
# Decoding this far behind the audio received is reported ...
LAG_REPORT_SECONDS = 2.0
# ... at most this often.
LAG_EVERY_SECONDS = 5.0
LAG_EVENT = "whisper_mcp.lag"
# A routed session keeps to the language a decode of this much audio heard ...
PIN_SECONDS = 2.0
# ... when that decode was this sure of it, or when it completed an utterance.
PIN_SURE = 0.8

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Speculation:
    """An utterance's last decode, started in a pause before its end was declared."""

    end: int  # session sample where the audio it decodes ends
    request: JobRequest
    task: asyncio.Task[Transcription]

    def cancel(self) -> None:
        self.task.cancel()


@dataclass
class Utterance:
    item_id: str
    start: int  # in the session's samples
    audio: np.ndarray | None = None  # set at commit
    agreement: LocalAgreement = field(default_factory=lambda: LocalAgreement(span=AGREEMENT_SPAN_SAMPLES))
    decoded: int = 0  # samples of it the latest decode covered
    committed_at: float = 0.0  # monotonic
    speculation: Speculation | None = None


class RealtimeSession:
    def __init__(self, live: LiveTranscription, send: Send, *, keep: bool, keep_audio: bool = False) -> None:
        self._live = live
        self._send = send
        self.id = protocol.new_id("sess")
        self.config = SessionConfig()
        # What the session asked for, and what its decodes use: the same,
        # until a routed session's language is known (``_heard``).
        self._asked = self._request = self._resolve(self.config)
        self._decoder = Decoder(self.config.format)
        self._buffer = np.zeros(0, np.float32)  # the input audio buffer: since its start, below
        self._buffer_start = 0  # session sample of _buffer[0]
        self._received = 0  # session samples received
        self._detector = SpeechProbabilities()
        self._turns = self._new_turns()
        self._current: Utterance | None = None
        self._committed: deque[Utterance] = deque()
        self._previous_item: str | None = None
        self._wake = asyncio.Event()
        self._kept = KeptSession(recording=live.recording() if keep_audio else None) if keep else None
        self._skipped = 0
        self._partial_cost = 0.0  # seconds the latest decode of an utterance in progress took
        self._lag_said = -math.inf
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # -- life --------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._decode_loop(), name=f"realtime-{self.id}")
        await self._send(protocol.event("session.created", session=self._session(legacy=False)))

    async def close(self) -> str | None:
        """The client left: committed utterances are still decoded (and kept);
        the one in progress is dropped. The kept job's id, if any."""
        self._closing = True
        self._drop_current()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._kept is None:
            return None
        return await self._live.finish(self._kept, self._received / SAMPLE_RATE, self._request)

    # -- client events ---------------------------------------------------------

    async def handle(self, message: str | bytes) -> None:
        event: protocol.ClientEvent | None = None
        try:
            event = protocol.read_event(message)
            await self._act(event)
        except ProtocolError as exc:
            if exc.event_id is None and event is not None:
                exc.event_id = event.event_id
            await self._send(protocol.error(exc))
        except Exception:  # ours, not the client's: said so, and the session goes on
            log.exception("session %s: an event failed", self.id)
            failed = ProtocolError(INTERNAL_ERROR, code="server_error", kind="server_error")
            failed.event_id = event.event_id if event is not None else None
            await self._send(protocol.error(failed))

    async def _act(self, event: protocol.ClientEvent) -> None:
        if event.session is not None:
            await self._update(event)
        elif event.type == "input_audio_buffer.append":
            await self._append(event.audio)
        elif event.type == "input_audio_buffer.commit":
            await self._commit()
        elif event.type == "input_audio_buffer.clear":
            self._clear()
            await self._send(protocol.event("input_audio_buffer.cleared"))

    async def _update(self, event: protocol.ClientEvent) -> None:
        legacy = event.type == "transcription_session.update"
        assert event.session is not None
        config = protocol.update(self.config, event.session, legacy=legacy)
        asked = self._resolve(config)
        # A language identified stays while the session asks for the same.
        same = (asked.model, asked.options) == (self._asked.model, self._asked.options)
        request = self._request if same else asked
        if config.format != self.config.format:
            self._decoder = Decoder(config.format)
        if config.turn_detection != self.config.turn_detection:
            self.config = config
            self._turns = self._new_turns()
        self.config, self._asked, self._request = config, asked, request
        kind = "transcription_session.updated" if legacy else "session.updated"
        await self._send(protocol.event(kind, session=self._session(legacy=legacy)))

    def _resolve(self, config: SessionConfig, language: str | None = None) -> JobRequest:
        """The request ``config`` asks for; with ``language``, as if it named that language."""
        try:
            hotwords = " ".join(config.keywords) or None
            language = language or config.language
            return self._live.request(config.model, language, config.prompt, hotwords, config.logprobs)
        except ServiceError as exc:
            param = "session.audio.input.transcription"
            raise ProtocolError(exc.message, code=exc.code, param=param) from None

    def _session(self, *, legacy: bool) -> dict[str, Any]:
        return protocol.session_object(self.config, self.id, legacy=legacy)

    def _new_turns(self) -> Turns | None:
        """Turns from now on: a fresh detector, its frames counted from here."""
        turns = self.config.turn_detection
        if turns is None:
            return None
        self._detector = self._live.detector()
        return Turns(turns.threshold, turns.silence_duration_ms, frames=self._received // FRAME)

    # -- audio -----------------------------------------------------------------

    async def _append(self, data: bytes) -> None:
        samples = self._decoder.push(data)
        if not len(samples):
            return
        if self._kept is not None and self._kept.recording is not None:
            await self._kept.recording.add(samples)
        start = self._received
        self._received += len(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        if self._turns is None:
            if self._current is None:
                self._current = Utterance(protocol.new_id("item"), start)
        else:
            for turn in self._turns.push(await self._live.speech(self._detector, samples)):
                if turn.kind == "started":
                    await self._speech_started(turn.ms)
                elif self._current is not None:
                    await self._speech_stopped(turn.ms)
            if self._current is None:  # silence: keep only what a start's padding may need
                self._trim(self._received - self._padding())
            elif (end := self._split_at()) is not None:
                await self._split(end)
            else:
                self._speculate()
        self._wake.set()

    def _padding(self) -> int:
        turns = self.config.turn_detection
        return 0 if turns is None else turns.prefix_padding_ms * SAMPLE_RATE // 1000

    def _trim(self, keep_from: int) -> None:
        keep_from = max(self._buffer_start, keep_from)
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from

    async def _speech_started(self, ms: int) -> None:
        start = max(self._buffer_start, ms * SAMPLE_RATE // 1000 - self._padding())
        self._trim(start)
        self._current = Utterance(protocol.new_id("item"), start)
        await self._send(
            protocol.event(
                "input_audio_buffer.speech_started",
                audio_start_ms=start * 1000 // SAMPLE_RATE,
                item_id=self._current.item_id,
            )
        )

    def _end_at(self, ms: int) -> int:
        """The session sample where the utterance in progress ends if its speech stopped at ``ms``."""
        assert self._current is not None
        return min(max(ms * SAMPLE_RATE // 1000, self._current.start), self._received)

    def _speculate(self) -> None:
        """In a pause that may end the utterance in progress, start its last
        decode on the audio up to the pause; once speech resumes, cancel it."""
        current, turns = self._current, self._turns
        if current is None or turns is None:
            return
        spec = current.speculation
        if turns.quiet_since is None or turns.quiet_ms < SPECULATE_AFTER_MS:
            if spec is not None and turns.quiet_since is None:  # speaking again: not the end
                spec.cancel()
                current.speculation = None
            return
        end = self._end_at(turns.quiet_since)
        if spec is not None and spec.end == end and spec.request is self._request:
            return
        if spec is not None:
            spec.cancel()
        audio = self._buffer[max(0, current.start - self._buffer_start) : end - self._buffer_start].copy()
        task = asyncio.create_task(self._live.decode(audio, self._request), name=f"speculation-{current.item_id}")
        task.add_done_callback(_retrieve)  # its failure is the commit's to report, if it is used
        current.speculation = Speculation(end, self._request, task)

    async def _speech_stopped(self, ms: int) -> None:
        assert self._current is not None
        end = self._end_at(ms)
        await self._send(
            protocol.event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=self._current.item_id)
        )
        await self._commit_until(end)

    def _split_at(self) -> int | None:
        """Where speech that goes on too long is cut (a session sample), if
        now: at its first pause past SPLIT_AFTER_SECONDS (a word cut in two is
        misheard on both sides), or at MAX_PARTIAL_SECONDS if none came."""
        current, turns = self._current, self._turns
        assert current is not None and turns is not None
        length = self._received - current.start
        if length >= MAX_PARTIAL_SECONDS * SAMPLE_RATE:
            return self._received
        pause = turns.quiet_since if turns.quiet_ms >= SPECULATE_AFTER_MS else None
        if length < SPLIT_AFTER_SECONDS * SAMPLE_RATE or pause is None:
            return None
        return self._end_at(pause)

    async def _split(self, end: int) -> None:
        """Speech that goes on too long: committed up to ``end``. At a pause,
        as if the pause had ended the turn (speech that resumes starts the
        next); else continued in a new item at once."""
        assert self._current is not None and self._turns is not None
        ms = end * 1000 // SAMPLE_RATE
        await self._send(
            protocol.event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=self._current.item_id)
        )
        await self._commit_until(end)
        if end < self._received:
            self._turns.reset()
            return
        self._current = Utterance(protocol.new_id("item"), end)
        await self._send(
            protocol.event("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=self._current.item_id)
        )

    async def _commit(self) -> None:
        if self._received - self._buffer_start < MIN_COMMIT_SECONDS * SAMPLE_RATE:
            raise ProtocolError(
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{int(MIN_COMMIT_SECONDS * 1000)}ms of audio, but buffer only has "
                f"{(self._received - self._buffer_start) * 1000 // SAMPLE_RATE}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        if self._current is None:
            self._current = Utterance(protocol.new_id("item"), self._buffer_start)
        await self._commit_until(self._received)
        if self._turns is not None:
            self._turns.reset()

    async def _commit_until(self, end: int) -> None:
        """The utterance in progress ends at session sample ``end``: committed, queued for its last decode."""
        utterance = self._current
        assert utterance is not None
        utterance.audio = self._buffer[max(0, utterance.start - self._buffer_start) : end - self._buffer_start].copy()
        utterance.committed_at = time.monotonic()
        self._trim(end)
        self._current = None
        await self._send(
            protocol.event(
                "input_audio_buffer.committed", previous_item_id=self._previous_item, item_id=utterance.item_id
            )
        )
        self._previous_item = utterance.item_id
        self._committed.append(utterance)
        self._wake.set()

    def _clear(self) -> None:
        self._trim(self._received)
        self._drop_current()
        if self._turns is not None:
            self._turns.reset()

    def _drop_current(self) -> None:
        """The utterance in progress is dropped, with its last decode if one began."""
        if self._current is not None and self._current.speculation is not None:
            self._current.speculation.cancel()
        self._current = None

    # -- decoding ----------------------------------------------------------------

    async def _decode_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._decode_next():
                    return
            except Exception:  # a bug of ours must not silence the session's later utterances
                log.exception("session %s: decoding failed", self.id)

    async def _decode_next(self) -> bool:
        """Complete the committed utterances, then decode the one in progress
        once again if it grew enough; False once the session has closed."""
        while self._committed:
            await self._complete(self._committed.popleft())
        if self._closing:
            return False
        current = self._current
        if current is None or current.speculation is not None:
            return True  # nothing in progress; or a pause that may end it, already decoded to its end
        if current.agreement.sent:
            step = max(SETTLED_STEP_SECONDS, PARTIAL_COST_FACTOR * self._partial_cost) * SAMPLE_RATE
        else:
            step = max(DECODE_STEP_SECONDS, self._partial_cost) * SAMPLE_RATE
        new = self._received - current.start - current.decoded
        if new < step or self._received - current.start > MAX_PARTIAL_SECONDS * SAMPLE_RATE:
            return True  # too little new audio; or too long to decode again and again: its commit decodes it
        self._skipped += int(new // step) - 1 if current.decoded else 0
        audio = self._buffer[current.start - self._buffer_start :].copy()
        current.decoded = len(audio)
        await self._partial(current, audio)
        self._wake.set()  # audio that came meanwhile, or a commit
        return True

    async def _partial(self, utterance: Utterance, audio: np.ndarray) -> None:
        began = time.monotonic()
        try:
            result = await self._live.decode(audio, self._request, partial=True, quick=not utterance.agreement.sent)
            self._partial_cost = time.monotonic() - began
        except Exception:  # the utterance's last decode says what went wrong
            log.warning("session %s: a decode of utterance %s failed", self.id, utterance.item_id, exc_info=True)
            return
        self._heard(result, len(audio), final=False)
        if utterance.audio is not None or self._current is not utterance:
            return  # committed or dropped meanwhile: its last decode speaks for it
        new = utterance.agreement.hypothesis(self._words(result), heard=len(audio))
        if new:
            await self._delta(utterance, new)
        await self._report_lag()

    async def _complete(self, utterance: Utterance) -> None:
        assert utterance.audio is not None
        end = utterance.start + len(utterance.audio)
        try:
            result = await self._last_decode(utterance)
        except Exception as exc:
            self._live.metrics.utterance("failed", 0.0)
            await self._failed(utterance, exc)
            return
        self._heard(result, len(utterance.audio), final=True)
        agreement = utterance.agreement
        rest = agreement.final(self._words(result))
        if rest:
            await self._delta(utterance, rest)
        fields: dict[str, Any] = {
            "item_id": utterance.item_id,
            "content_index": 0,
            "transcript": agreement.transcript,
            "usage": {"type": "duration", "seconds": round(len(utterance.audio) / SAMPLE_RATE, 3)},
        }
        if self.config.logprobs:
            fields["logprobs"] = _logprobs(agreement.sent)
        if self.config.language is None and result.language:
            fields["languages"] = [{"code": result.language}]  # detected: OpenAI's field for it
        if not self._closing:
            await self._send(protocol.event("conversation.item.input_audio_transcription.completed", **fields))
        self._live.metrics.utterance("completed", time.monotonic() - utterance.committed_at)
        await self._report_lag()
        if self._kept is not None:
            segment = {
                "start": round(utterance.start / SAMPLE_RATE, 3),
                "end": round(end / SAMPLE_RATE, 3),
                "text": agreement.transcript,
                "item_id": utterance.item_id,
            }
            try:
                await self._live.keep(self._kept, self._request, segment, result.language, self._received / SAMPLE_RATE)
            except Exception:
                log.warning("session %s: could not keep utterance %s", self.id, utterance.item_id, exc_info=True)

    async def _last_decode(self, utterance: Utterance) -> Transcription:
        """The committed utterance's decode: the one begun in the pause that
        ended it, if that covered the same audio with the same request."""
        assert utterance.audio is not None
        spec, utterance.speculation = utterance.speculation, None
        if spec is not None:
            if spec.end == utterance.start + len(utterance.audio) and spec.request is self._request:
                with contextlib.suppress(Exception):  # decoded again below, which reports its failure
                    return await spec.task
            else:
                spec.cancel()
        return await self._live.decode(utterance.audio, self._request)

    def _heard(self, result: Transcription, samples: int, *, final: bool) -> None:
        """A routed session keeps to the language a decode heard, once it is
        sure (or an utterance long enough completed): identified no more."""
        sure = (result.language_probability or 0.0) >= PIN_SURE
        if not self._request.options.reroute or not result.language or samples < PIN_SECONDS * SAMPLE_RATE:
            return
        if final or sure:
            self._request = self._resolve(self.config, result.language)
            log.info(
                "session %s: the language is %s (%.0f%% sure); decoded by %s from now on",
                self.id, result.language, 100 * (result.language_probability or 0.0), self._request.model,
            )  # fmt: skip

    async def _failed(self, utterance: Utterance, exc: Exception) -> None:
        if isinstance(exc, ServiceError):
            message, code = exc.message, exc.code
        else:
            log.error("session %s: utterance %s failed", self.id, utterance.item_id, exc_info=exc)
            message, code = INTERNAL_ERROR, "server_error"
        if not self._closing:
            await self._send(
                protocol.event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=utterance.item_id,
                    content_index=0,
                    error={"type": "transcription_error", "code": code, "message": message, "param": None},
                )
            )

    async def _delta(self, utterance: Utterance, new: list[Word]) -> None:
        if self._closing:
            return
        fields: dict[str, Any] = {
            "item_id": utterance.item_id,
            "content_index": 0,
            "delta": utterance.agreement.delta(new),
        }
        if self.config.logprobs:
            fields["logprobs"] = _logprobs(new)
        await self._send(protocol.event("conversation.item.input_audio_transcription.delta", **fields))

    def _words(self, result: Transcription) -> list[Word]:
        if self.config.logprobs and all(s.words is not None for s in result.segments) and result.segments:
            return [
                Word(w.word.strip(), math.log(max(w.probability, 1e-12)))
                for s in result.segments
                for w in s.words or ()
                if w.word.strip()
            ]
        return words_of(result.text)

    def _behind(self) -> int:
        """Samples received that no decode has covered yet: from the first
        committed utterance still waiting, or the utterance in progress past
        its latest decode; none in silence."""
        waiting = [u.start for u in self._committed]
        if self._current is not None:
            waiting.append(self._current.start + self._current.decoded)
        return self._received - min(waiting, default=self._received)

    async def _report_lag(self) -> None:
        """Say how far decoding is behind the audio received, when that is far."""
        behind = self._behind() / SAMPLE_RATE
        now = time.monotonic()
        if behind < LAG_REPORT_SECONDS or now - self._lag_said < LAG_EVERY_SECONDS or self._closing:
            return
        self._lag_said = now
        await self._send(
            protocol.event(
                LAG_EVENT,
                lag_ms=round(behind * 1000),
                skipped_decodes=self._skipped,
                message=f"Decoding is {behind:.1f} s behind the audio received; intermediate deltas are "
                "skipped until it catches up (completed transcripts never are).",
            )
        )


def _retrieve(task: asyncio.Task[Transcription]) -> None:
    """A speculation's outcome, taken so that one never used is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


def _logprobs(words: list[Word]) -> list[dict[str, Any]]:
    return protocol.logprobs([(w.text, w.logprob if w.logprob is not None else 0.0) for w in words])


__all__ = ["DECODE_STEP_SECONDS", "LAG_EVENT", "RealtimeSession"]
