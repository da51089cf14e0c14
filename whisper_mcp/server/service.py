"""The service layer: what MCP tools and REST routes both call.

Async methods run on the event loop and push every blocking step (SQLite,
file copies, audio probing) to worker threads; inference happens on the
inference thread alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import anyio
from anyio import to_thread

from whisper_mcp import compat
from whisper_mcp.config import Settings
from whisper_mcp.diarization import DIARIZER_NAME
from whisper_mcp.diarization.references import KnownSpeaker, read_reference
from whisper_mcp.engines.audio import probe_audio
from whisper_mcp.engines.base import Engine, engine_label
from whisper_mcp.errors import Conflict, DependencyUnavailable, InvalidAudio, InvalidInput, JobNotFound, NotReady
from whisper_mcp.formats import FORMATS, render
from whisper_mcp.logs import job_event
from whisper_mcp.options import (
    check_engine_options,
    english_only,
    parse_bool,
    parse_language,
    parse_options,
    parse_priority,
)
from whisper_mcp.queue.files import IncomingFile, StoredUpload, new_key
from whisper_mcp.queue.jobs import FINISHED_STATUSES, JOB_ID, DuplicateJob, Job, JobRequest, JobStatus
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.partial import PartialCursor
from whisper_mcp.server.audio_urls import AudioSources, url_filename
from whisper_mcp.server.callbacks import CallbackSender
from whisper_mcp.server.changes import JobChanges, Waiter
from whisper_mcp.server.egress import redact_url
from whisper_mcp.server.live import LiveTranscription
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.metrics import State as MetricState
from whisper_mcp.server.realtime_secrets import ClientSecrets
from whisper_mcp.server.results import (
    CompatFallback,
    Health,
    JobPage,
    JobRecord,
    ModelEntry,
    Models,
    RunningJob,
    UploadUrl,
    job_record,
    model_label,
)
from whisper_mcp.server.uploads import UploadManager
from whisper_mcp.server.worker import InferenceWorker

log = logging.getLogger("whisper_mcp.server.service")

MAX_OFFSET = 2**31 - 1
# The status of a job id that create_upload_url issued, before its file arrives:
# not a job yet (so not a JobStatus), but not unknown either.
AWAITING_UPLOAD = "waiting_for_upload"
# How stale /health's queue size may be, in seconds (see _queue_size).
HEALTH_COUNT_TTL = 0.5
# A follower woken by no change (its idle re-read) takes the snapshot another
# follower of the same job read at most this many seconds ago.
FEED_MAX_AGE = 1.0
# A stream woken by a change waits this long before it reads, so that one
# snapshot (one write to each of hundreds of streams) carries a whole burst.
STREAM_PACE = 0.03

ProgressReporter = Callable[[JobRecord], Awaitable[None]]


@dataclass
class Feed:
    """What the followers of one job (streams, long polls) share: its latest
    snapshot, read once per change for all of them, and every segment read
    so far (held while the job is followed)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cursor: PartialCursor = field(default_factory=PartialCursor)
    segments: list[dict[str, Any]] = field(default_factory=list)
    record: JobRecord | None = None
    changes: int = -1  # the job's change count when that read began
    read_at: float = float("-inf")  # and when (monotonic)


@dataclass(frozen=True)
class JobSnapshot:
    """A job's record as ``status`` gives it, less a processing job's
    ``partial_transcript`` (``segments_done`` counts all its segments), and
    the segments decoded since the follower's previous snapshot (in the
    first: all so far; once completed: the rest of its result's)."""

    record: JobRecord
    segments: list[dict[str, Any]]


def join_text(segments: list[dict[str, Any]]) -> str:
    """Segments' texts as one transcript (each is stored stripped)."""
    return " ".join(text for s in segments if (text := str(s.get("text") or "").strip()))


@dataclass(frozen=True)
class Submission:
    """A client's request, as sent (strings from a form or typed MCP arguments);
    ``TranscriptionService`` validates it."""

    filename: str | None = None
    job_id: str | None = None
    model: str | None = None
    language: str | None = None
    task: str | None = None
    initial_prompt: str | None = None
    temperature: float | str | None = None
    beam_size: int | str | None = None
    word_timestamps: bool | str | None = None
    vad_filter: bool | str | None = None
    hotwords: str | None = None
    priority: str | None = None
    callback_url: str | None = None
    # False forces a new transcription even when an identical one is cached.
    cache: bool | str | None = None
    # Speaker diarization and its speaker count hints.
    diarize: bool | str | None = None
    num_speakers: int | str | None = None
    min_speakers: int | str | None = None
    max_speakers: int | str | None = None
    # Known speakers to name (diarize only): (name, audio data URL), paired and
    # checked by the transport with ``diarization.references.pair``.
    known_speakers: Sequence[tuple[str, str]] | None = None
    # Instead of the audio itself: where the job's run fetches it (``submit_url``).
    audio_url: str | None = None


# The fields transports take by name, one value each (form fields, tool
# arguments); known speakers come in each transport's own shape (OpenAI's
# paired form fields, a list of objects in MCP).
SUBMISSION_FIELDS = tuple(f.name for f in fields(Submission) if f.name != "known_speakers")


class TranscriptionService:
    """What the transports call. Built by ``app.build_service`` from its
    collaborators, so tests can hand in a fake engine."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue: JobQueue,
        engine: Engine,
        worker: InferenceWorker,
        uploads: UploadManager,
        callbacks: CallbackSender,
        metrics: Metrics,
        client_secrets: ClientSecrets,
        sources: AudioSources | None = None,
    ) -> None:
        self.settings = settings
        self.client_secrets = client_secrets
        # The URL schemes a job may be sent as (None: none).
        self.sources = sources
        self.queue = queue
        self.engine = engine
        self.worker = worker
        self.uploads = uploads
        self.callbacks = callbacks
        self.metrics = metrics
        self.default_model = engine.registry.resolve(settings.model, trusted=True).name
        # Language routing's model, which also checks what English-only models are
        # sent (routing off, or named); None: no check.
        self.multilingual_model: str | None = None
        if settings.multilingual_model:
            self.multilingual_model = engine.registry.resolve(settings.multilingual_model, trusted=True).name
        self.max_upload_bytes = settings.max_upload_bytes
        self.min_free_bytes = settings.min_free_bytes
        # Live transcription (/v1/realtime), on the worker's models.
        self.live = LiveTranscription(settings, queue, engine, worker.gate, self._live_request, metrics)
        metrics.watch(self._metric_state)
        queue.on_change(self._job_changed)
        queue.on_availability(self._availability_changed)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Streams and long polls, each woken by its own job's changes, and
        # each job's latest snapshot, read once per change for all of them.
        self._changes: JobChanges[Feed] = JobChanges(Feed)
        self._tasks: list[asyncio.Task[None]] = []
        # /health's queue size: (when read, the queue's version then or -1, count).
        self._queued: tuple[float, int, int] | None = None
        self._queued_lock = asyncio.Lock()

    # -- what transports ask of it ----------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the inference thread runs: a process without it takes jobs it never runs."""
        return self.worker.alive

    @property
    def max_wait_seconds(self) -> float:
        """The longest a status request may wait for its job to end."""
        return self.settings.max_wait_seconds

    @property
    def public_url(self) -> str | None:
        """The base URL clients reach this service at, when the operator set one."""
        return self.settings.public_url

    def count_error(self, code: str) -> None:
        """Count a refused or failed request by its error code (for /metrics)."""
        self.metrics.errors.labels(code).inc()

    # -- life cycle -------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        again = await to_thread.run_sync(self.queue.recover)
        if again:
            log.info("re-queued %d interrupted job(s): %s", len(again), ", ".join(again))
        self.worker.start()
        self._tasks = [
            asyncio.create_task(self.callbacks.run(), name="callbacks"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_end)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await to_thread.run_sync(self.worker.stop)

    async def _housekeeping(self) -> None:
        while True:
            try:
                await to_thread.run_sync(self.sweep, time.time())
            except (
                DependencyUnavailable
            ):  # an outage (database, object store), logged where it is noticed: sweep next time
                pass
            except Exception:  # a failed sweep must not end the loop
                log.exception("housekeeping failed")
            await asyncio.sleep(self.settings.housekeeping_seconds)

    def sweep(self, now: float) -> None:
        """Blocking: expire abandoned uploads, unused client secrets and, past retention, ended jobs."""
        expired_uploads = self.uploads.sweep(now)
        self.client_secrets.sweep(now)
        expired_jobs = 0
        if self.settings.retention_days > 0:
            expired_jobs = self.queue.expire(now - self.settings.retention_days * 86400)
        if expired_uploads or expired_jobs:
            log.info("housekeeping: %d upload(s) and %d job(s) expired", expired_uploads, expired_jobs)

    def _job_changed(self, job_id: str) -> None:
        # Called from the thread that changed the job (here, or a replica's
        # notification); wake the worker (a job may be queued) and the job's waiters.
        self.worker.notify()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._signal, job_id)

    def _availability_changed(self, up: bool) -> None:
        # The database went away: every stream and long poll reads its job
        # again now, finds it away, and says so, rather than waiting.
        if not up and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._changes.wake_all)

    def _signal(self, job_id: str) -> None:
        self._changes.changed(job_id)
        self.callbacks.kick()

    # -- submitting -------------------------------------------------------

    async def submit(self, upload: StoredUpload, submission: Submission, *, from_url: bool = False) -> JobRecord:
        """Validate and queue an upload already written under ``incoming/``.

        The upload is consumed: it becomes the job's audio or is removed.
        ``from_url``: the upload came to the one-time URL that reserved its job id.
        """
        try:
            request, speakers = await self._validate(upload, submission)
            job = await self._enqueue(upload, request, speakers, submission, from_url=from_url)
        finally:
            await self.discard(upload)
        return await self._answer(job)

    async def submit_url(self, submission: Submission) -> JobRecord:
        """Queue a job sent as ``submission.audio_url``: checked for shape and
        scheme only, and answered at once; the job's run fetches the audio
        (``AudioSources.fetch``), and a fetch that fails fails the job."""
        request = self._check_submission(submission)
        if request.audio_url is None:
            raise InvalidInput("audio_url is empty: give the recording's URL, or send the file itself.")
        await self._vet_callback(request)
        speakers = await self._speakers(submission)
        options = replace(request.options, known_speakers=tuple((s.name, s.sha256) for s in speakers))
        request = replace(request, options=options, filename=request.filename or url_filename(request.audio_url))
        return await self._answer(await self._enqueue(None, request, speakers, submission))

    async def _enqueue(
        self,
        upload: StoredUpload | None,
        request: JobRequest,
        speakers: list[KnownSpeaker],
        submission: Submission,
        *,
        from_url: bool = False,
    ) -> Job:
        """Store the job (``upload``: its audio; None: sent as a URL), or
        find the same one sent before."""
        if submission.job_id and not from_url and await self.uploads.url_for_job(submission.job_id) is not None:
            raise Conflict(
                f"job_id {submission.job_id!r} is reserved by a one-time upload URL (create_upload_url) "
                "until it is used or expires; choose another job_id or leave it out."
            )
        try:
            use_cache = submission.cache is None or parse_bool("cache", submission.cache)
            references = [s.wav for s in speakers]
            return await to_thread.run_sync(
                lambda: self.queue.enqueue(upload, request, use_cache=use_cache, references=references)
            )
        except DuplicateJob as dup:
            existing = dup.existing
            same = existing.audio_url == request.audio_url
            if upload is not None:
                same = existing.audio_url is None and existing.audio_sha256 == upload.sha256
            if not same:
                raise Conflict(
                    f"job_id {request.job_id!r} is already used by a job with different audio; "
                    "choose another job_id or leave it out to get a generated one"
                ) from None
            return existing  # the same audio sent again: answer with the job we have

    async def _answer(self, job: Job) -> JobRecord:
        """The answer to a submission that stored (or found) ``job``."""
        if job.status is not JobStatus.QUEUED:  # cached, or a re-sent upload of an older job
            if job.cached_from is not None:
                self.callbacks.kick()
                job_event(log, "cached", job.job_id, model=job.model, cached_from=job.cached_from)
            return await self.status(job.job_id)
        # Answer from the job as queued: the worker may start it any moment now.
        record = job_record(job)
        record["queue_position"] = await to_thread.run_sync(self.queue.queue_position, job)
        self.metrics.upload_bytes.inc(job.audio_bytes)
        return record

    async def submit_bytes(self, data: bytes, submission: Submission) -> JobRecord:
        """A whole file in memory (MCP base64): the same sink, limits and disk check
        as a streamed upload."""

        def write() -> StoredUpload:
            sink = self.new_sink()
            sink.write(data)
            return sink.finish()

        return await self.submit(await to_thread.run_sync(write), submission)

    async def submit_upload(self, upload_id: str, submission: Submission) -> JobRecord:
        """A finished chunked upload. It stays (until it expires) when the
        submission fails, so a retry with other options needs no new upload."""
        self._check_submission(submission)  # bad options refused before the upload is touched
        upload, filename = await self.uploads.take(upload_id)
        if submission.filename is None and filename:
            submission = replace(submission, filename=filename)
        return await self._consuming(upload_id, self.submit(upload, submission))

    async def _consuming(self, upload_id: str, submitting: Awaitable[JobRecord]) -> JobRecord:
        """Submit a taken upload (chunked or one-time URL): consumed once its
        job is queued, open again for a retry if the submission fails."""
        try:
            record = await submitting
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.uploads.release(upload_id)
            raise
        await self.uploads.consumed(upload_id)
        return record

    async def begin_upload(self, filename: str | None, size: int | None, sha256: str | None) -> dict[str, Any]:
        return await self.uploads.begin(filename, size, sha256)

    async def upload_chunk(self, upload_id: str, offset: int, data: bytes) -> dict[str, Any]:
        return await self.uploads.chunk(upload_id, offset, data)

    async def upload_to_url(
        self, secret: str, receive: Callable[[], Awaitable[tuple[StoredUpload, str | None]]]
    ) -> JobRecord:
        """An upload to a one-time URL: the URL is claimed before ``receive``
        reads the body (a second sender is refused at once), used up when the
        job is queued, and open again if the body or the audio is refused."""
        upload_id, submission = await self.uploads.claim_url(secret)

        async def submitting() -> JobRecord:
            upload, filename = await receive()
            sub = Submission(**submission)
            if sub.filename is None and filename:
                sub = replace(sub, filename=filename)
            return await self.submit(upload, sub, from_url=True)

        return await self._consuming(upload_id, submitting())

    async def discard(self, upload: StoredUpload) -> None:
        """Remove an upload that will not become a job."""
        await to_thread.run_sync(self.queue.files.discard, upload.path)

    def _route(self, sub: Submission) -> tuple[str, str | None]:
        """(model, language) for a submission. Naming no model leaves the choice
        to language routing: with an English-only start-up model, a translation
        or a named language other than English goes to the multilingual model
        (transcriptions with no language are identified first: ``_check_submission``)."""
        multilingual = self._routing(sub.model)
        if multilingual is None:
            return self.model_name(sub.model), sub.language
        language = parse_language(sub.language, multilingual)
        if sub.task == "translate" or language not in (None, "en"):
            return multilingual, language
        return self.default_model, language

    def _live_request(
        self, model: str | None, language: str | None, prompt: str | None, hotwords: str | None, words: bool
    ) -> JobRequest:
        """A live session's model and options, checked as a submission's are."""
        sub = Submission(model=model, language=language, initial_prompt=prompt, hotwords=hotwords)
        return self._check_submission(replace(sub, word_timestamps=words, vad_filter=False))

    def serves(self, name: str | None) -> str:
        """What a request naming model ``name`` (None: none) is decoded by, in words."""
        model = self.model_name(name)
        if (routed := self._routing(name)) is not None:
            multilingual = model_label(routed)
            return (
                f"{model_label(model)} for English; other languages and translations: {multilingual} "
                f"(the language is identified first, by {multilingual})"
            )
        kind = "English only" if english_only(model) else "multilingual: detects the language, translates"
        return f"{model_label(model)} ({kind})"

    def _routing(self, name: str | None) -> str | None:
        """The multilingual model language routing sends a request naming model
        ``name`` to when it is not English; None where routing does not choose:
        a model named, routing off, no multilingual model, or a multilingual
        start-up model (which detects the language itself)."""
        named = bool(name and name.strip())
        if named or not self.settings.language_routing or not english_only(self.default_model):
            return None
        return self.multilingual_model

    def model_name(self, name: str | None) -> str:
        """The model a job asking for ``name`` gets (the default when None, or
        when named as answers show it); ``UnknownModel`` if none."""
        if not name or name.strip() in (self.default_model, model_label(self.default_model)):
            return self.default_model  # the operator's choice, which may be a path
        return self.engine.registry.resolve(name).name

    def new_sink(self) -> IncomingFile:
        return self.queue.files.incoming_file(self.max_upload_bytes, self.min_free_bytes)

    async def check_space(self, expected_bytes: int) -> None:
        """Refuse (507) an upload of ``expected_bytes`` before reading it, when the disk is nearly full."""
        await to_thread.run_sync(self.queue.files.check_space, self.min_free_bytes, expected_bytes)

    async def create_upload_url(self, submission: Submission, base_url: str) -> UploadUrl:
        """A one-time URL that a shell can send the file to; the job id it will become."""
        request = self._check_submission(submission)
        _no_url(request)
        await self._vet_callback(request)
        job_id = submission.job_id or new_key()
        if not submission.job_id:
            submission = replace(submission, job_id=job_id)
        elif await to_thread.run_sync(self.queue.get, submission.job_id) is not None:
            raise Conflict(f"job_id {submission.job_id!r} is already used; choose another or leave it out.")
        secret, record = await self.uploads.create_url({k: v for k, v in asdict(submission).items() if v is not None})
        url = f"{base_url.rstrip('/')}/upload/{secret}"
        return {
            "upload_url": url,
            "job_id": job_id,
            "expires_at": record.expires_at,
            "expires_in_seconds": round(record.expires_at - time.time()),
            "command": f"curl --fail-with-body --data-binary @FILE '{url}'",
            "note": "Works once, without a token. Replace FILE with the recording's path. Then call "
            f"check_transcription_status(job_id={submission.job_id!r}, wait_seconds=45).",
        }

    def _check_submission(self, sub: Submission) -> JobRequest:
        """Every check that needs no audio (so a one-time URL is refused up front);
        a request with the audio facts still to fill in."""
        if sub.job_id and not JOB_ID.match(sub.job_id):
            raise InvalidInput(
                "job_id must be 1-128 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit; or leave it out to get a generated one"
            )
        audio_url = None
        if sub.audio_url is not None and sub.audio_url.strip():
            if self.sources is None:
                raise InvalidInput("This server does not fetch audio URLs; send the file itself.")
            audio_url = self.sources.check(sub.audio_url)
        model, language = self._route(sub)
        options = parse_options(
            model,
            language=language,
            task=sub.task,
            initial_prompt=sub.initial_prompt,
            temperature=sub.temperature,
            beam_size=sub.beam_size,
            word_timestamps=sub.word_timestamps,
            diarize=sub.diarize,
            num_speakers=sub.num_speakers,
            min_speakers=sub.min_speakers,
            max_speakers=sub.max_speakers,
            vad_filter=sub.vad_filter,
            hotwords=sub.hotwords,
            vad_default=self.settings.vad_filter,
        )
        if (
            self.multilingual_model
            and options.language is None
            and options.task == "transcribe"
            and english_only(model)
        ):
            # Identified first: rerouted where the client left the model to us, else warned.
            options = replace(
                options, identify_with=self.multilingual_model, reroute=self._routing(sub.model) is not None
            )
        check_engine_options(options, self.engine.engine)
        if sub.known_speakers and not options.diarize:
            raise InvalidInput("known speakers apply to diarized transcriptions only; set diarize or leave them out.")
        return JobRequest(
            job_id=sub.job_id or new_key(),
            key=new_key(),
            filename=(sub.filename or None) and sub.filename[:255],
            model=model,
            callback_url=_check_callback(sub.callback_url),
            audio_sha256="",
            audio_bytes=0,
            duration=0.0,
            options=options,
            priority=parse_priority(sub.priority),
            engine=engine_label(self.engine),
            audio_url=audio_url,
        )

    async def _vet_callback(self, request: JobRequest) -> None:
        """Refuse (400, saying why) a callback_url the callback policy forbids now."""
        if request.callback_url is not None:
            await self.callbacks.vet(request.callback_url)

    async def _speakers(self, sub: Submission) -> list[KnownSpeaker]:
        """The known speakers' recordings, read and checked."""
        return [
            await to_thread.run_sync(read_reference, i, name, url)
            for i, (name, url) in enumerate(sub.known_speakers or ())
        ]

    async def _validate(self, upload: StoredUpload, sub: Submission) -> tuple[JobRequest, list[KnownSpeaker]]:
        """The job to store, and the known speakers' recordings to store with it."""
        request = self._check_submission(sub)
        _no_url(request)
        await self._vet_callback(request)
        if upload.size == 0:
            raise InvalidAudio("The uploaded file is empty (0 bytes). Send a WAV, MP3, FLAC, Ogg/Opus or M4A file.")
        speakers = await self._speakers(sub)
        info = await to_thread.run_sync(probe_audio, upload.path, self.settings.max_audio_seconds)
        options = replace(request.options, known_speakers=tuple((s.name, s.sha256) for s in speakers))
        request = replace(
            request,
            audio_sha256=upload.sha256,
            audio_bytes=upload.size,
            duration=round(info.duration, 3),
            options=options,
        )
        return request, speakers

    # -- changing ---------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or a running one at its next 30 s window."""
        job = await self._job(job_id)
        outcome = await to_thread.run_sync(self.queue.cancel, job_id)
        if outcome == JobStatus.CANCELLED.value:
            self.metrics.job_finished("cancelled", job.duration, 0.0)
            job_event(log, "cancelled", job_id, model=job.model, state="queued")
        elif outcome is None:
            job = await self._job(job_id)
            if job.status.finished:
                raise Conflict(f"Job {job_id!r} has already ended ({job.status.value}); there is nothing to cancel.")
        return await self.status(job_id)

    # -- reading ----------------------------------------------------------

    async def _job(self, job_id: str) -> Job:
        job = await to_thread.run_sync(self.queue.get, job_id)
        if job is None:
            raise JobNotFound(await self._no_job(job_id))
        return job

    async def _no_job(self, job_id: str) -> str:
        """Why there is no job ``job_id``: in words that fit an id this service issued."""
        url = await self.uploads.url_for_job(job_id)
        if url is not None and url.state == "open":
            return (
                f"No job with id {job_id!r} yet: it is waiting for its upload to the one-time URL "
                f"that create_upload_url gave (unused; it expires in {max(0, round(url.expires_at - time.time()))} s)."
            )
        if url is not None:
            return (
                f"No job with id {job_id!r} yet: its upload to the one-time URL is arriving now. Ask again in a moment."
            )
        return f"No job with id {job_id!r}. Check the id returned when the file was submitted."

    async def _awaiting_upload(self, job_id: str) -> JobRecord | None:
        """The record of a job id a one-time upload URL was issued for, while that URL is unused."""
        url = await self.uploads.url_for_job(job_id)
        if url is None or url.state != "open":
            return None
        return {
            "job_id": job_id,
            "status": AWAITING_UPLOAD,
            "progress": 0.0,
            "filename": url.filename,
            "created_at": url.created_at,
            "expires_at": url.expires_at,
            "note": "The service issued a one-time upload URL for this job id and no file has been sent "
            "to it yet; the job is queued when it arrives. The URL is shown only once: if it was lost, "
            "ask create_upload_url for a new one with the same job_id.",
        }

    async def status(self, job_id: str, fmt: str = "txt") -> JobRecord:
        """The job's record. For an id whose one-time upload URL is still unused:
        status ``waiting_for_upload`` (with ``expires_at``), not an error. A
        processing job's carries the text decoded so far (``partial_transcript``)
        and how many segments that is (``segments_done``)."""
        record, _ = await self._status(job_id, fmt)
        return record

    async def follow(self, job_id: str, idle_seconds: float = 15.0) -> AsyncIterator[JobSnapshot]:
        """The job now, then again after each change of it (a burst of
        changes together, STREAM_PACE after its first) or ``idle_seconds``
        without one, until it has ended: for streams. Each snapshot carries
        only the segments decoded since the one before. Raises ``JobNotFound``
        (before the first snapshot) like ``status``."""
        sent = 0
        with self._changes.watch(job_id) as waiter:
            while True:
                seen = waiter.clear()  # before reading, so no change is missed
                record, segments = await self._snapshot(job_id, waiter, seen)
                new = segments[sent:]  # taken now: other followers' reads extend the shared list
                sent += len(new)
                yield JobSnapshot(record, new)
                if record["status"] in FINISHED_STATUSES:
                    return
                if await waiter.wait(idle_seconds):
                    # The rest of the burst (a window's segments, its progress) in the same snapshot.
                    await asyncio.sleep(STREAM_PACE)

    async def _snapshot(self, job_id: str, waiter: Waiter[Feed], seen: int) -> tuple[JobRecord, list[dict[str, Any]]]:
        """The job's record (``status``'s, less ``partial_transcript``) and
        every segment so far, shared by all its followers: read again only if
        the job changed after the ``seen``-th change, or the last read is over
        FEED_MAX_AGE seconds old (a follower's idle re-read)."""
        feed = waiter.shared
        async with feed.lock:
            if feed.record is None or feed.changes < seen or time.monotonic() - feed.read_at > FEED_MAX_AGE:
                changes, read_at = waiter.changes, time.monotonic()
                with anyio.CancelScope(shield=True):  # a follower leaving must not lose what was read
                    record, new = await self._status(job_id, "txt", feed.cursor)
                feed.segments.extend(new)
                feed.record, feed.changes, feed.read_at = record, changes, read_at
            waiter.queued = feed.record["status"] == JobStatus.QUEUED.value
            return cast(JobRecord, dict(feed.record)), feed.segments

    async def result(self, job_id: str) -> dict[str, Any]:
        """A completed job's stored result (text, segments, language, duration)."""
        job = await self._job(job_id)
        return await to_thread.run_sync(self.queue.result, job) or {}

    async def _status(
        self, job_id: str, fmt: str, cursor: PartialCursor | None = None
    ) -> tuple[JobRecord, list[dict[str, Any]]]:
        """The record, and a processing job's segments so far. With ``cursor``
        (a follower's): only the segments it has not had (of a completed
        job: its result's), and no ``partial_transcript`` in the record."""
        fmt = check_format(fmt)
        job, segments = await to_thread.run_sync(self._read, job_id, cursor or PartialCursor())
        if job is None:
            awaiting = await self._awaiting_upload(job_id)
            if awaiting is not None:
                return awaiting, []
            job = await self._job(job_id)  # the upload may have just arrived
        record = job_record(job)
        if job.status is JobStatus.QUEUED:
            record["queue_position"] = await to_thread.run_sync(self.queue.queue_position, job)
        elif job.status is JobStatus.PROCESSING:
            # From the database: any replica answers for a job another one runs.
            eta = job.eta_seconds(time.time())
            record["eta_seconds"] = None if eta is None else round(eta, 1)
            record["cancel_requested"] = job.cancel_requested
            if cursor is None:
                record["partial_transcript"] = join_text(segments)
            record["segments_done"] = len(segments) if cursor is None else cursor.sent
            return record, segments
        elif job.status is JobStatus.COMPLETED:
            result = await to_thread.run_sync(self.queue.result, job) or {}
            record["transcript"] = render(result, fmt)
            if fmt != "txt":
                record["format"] = fmt
            probability = result.get("language_probability")
            if isinstance(probability, int | float):
                record["language_probability"] = probability
            # Language routing: the model that decoded it, and what was heard, in plain words.
            if isinstance(decoded_by := result.get("model"), str):
                record["model"] = model_label(decoded_by)
            if isinstance(warning := result.get("warning"), str):
                record["warning"] = warning
            if cursor is not None:  # a follower: the segments of the last window(s) it has not had
                stored = result.get("segments")
                tail = list(stored)[cursor.sent :] if isinstance(stored, list) else []
                cursor.sent += len(tail)
                return record, tail
        return record, []

    def _read(self, job_id: str, cursor: PartialCursor) -> tuple[Job | None, list[dict[str, Any]]]:
        """Blocking: the job, and a processing job's segments past ``cursor``
        (one trip to a thread for both)."""
        job = self.queue.get(job_id)
        return job, [] if job is None else self.queue.partial(job, cursor)

    async def list_jobs(self, status: str | None, limit: int, offset: int) -> JobPage:
        wanted = None
        if status:
            try:
                wanted = JobStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in JobStatus)
                raise InvalidInput(f"status must be one of {choices}, got {status!r}.") from None
        if not 1 <= limit <= 500 or not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput(f"limit must be from 1 to 500 and offset from 0 to {MAX_OFFSET}.")
        page = await to_thread.run_sync(lambda: self.queue.list(status=wanted, limit=limit, offset=offset))

        records = []
        for job in page.jobs:
            record = job_record(job)
            if job.job_id in page.queue_positions:
                record["queue_position"] = page.queue_positions[job.job_id]
            records.append(record)
        next_offset = offset + len(records)
        return {"jobs": records, "total": page.total, "next_offset": next_offset if next_offset < page.total else None}

    async def wait(
        self, job_id: str, seconds: float, report: ProgressReporter | None = None, fmt: str = "txt"
    ) -> JobRecord:
        """Status, after waiting up to ``seconds`` (capped) for the job to
        finish; ``report`` is given the record after each change of the job
        (a processing job's with the text so far), read as a stream reads it."""
        fmt = check_format(fmt)
        deadline = time.monotonic() + max(0.0, min(seconds, self.settings.max_wait_seconds))
        sent, text = 0, ""
        with self._changes.watch(job_id) as waiter:
            while True:
                seen = waiter.clear()  # before reading, so no change is missed
                record, segments = await self._snapshot(job_id, waiter, seen)
                if record["status"] in FINISHED_STATUSES:
                    # The shared snapshot renders the transcript as text.
                    return record if fmt == "txt" else await self.status(job_id, fmt)
                if record["status"] == JobStatus.PROCESSING.value:
                    new = segments[sent:]
                    sent += len(new)
                    text = join_text([{"text": text}, *new])  # the text so far, then the new segments'
                    record["partial_transcript"] = text
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return record
                if report is not None:
                    await report(record)
                await waiter.wait(remaining)

    async def transcript(self, job_id: str, fmt: str = "txt") -> str:
        fmt = check_format(fmt)
        job = await self._job(job_id)
        if job.status is not JobStatus.COMPLETED:
            detail = f": {job.error}" if job.error else ""
            raise NotReady(f"Job {job_id!r} is {job.status.value}{detail}; no transcript to download yet.")
        result = await to_thread.run_sync(self.queue.result, job)
        return render(result or {}, fmt)

    async def recording(self, job_id: str) -> Iterator[bytes]:
        """A job's kept recording, a WAV in pieces (read them off the event
        loop); ``NoRecording`` if it kept none, ``NotReady`` while its session runs."""
        job = await self._job(job_id)
        if not job.status.finished:
            raise NotReady(
                f"Job {job_id!r} is {job.status.value}: no audio to download yet (a live session's is kept when it ends)."
            )
        return await to_thread.run_sync(self.queue.recording, job)

    async def models(self) -> Models:
        loaded = {m.name: m for m in self.engine.pool.loaded()}
        models: list[ModelEntry] = []
        for info in self.engine.registry.available():
            entry: ModelEntry = {"name": info.name, "source": info.source, "offline": info.local, "loaded": False}
            if info.name in loaded:
                m = loaded[info.name]
                entry["loaded"], entry["memory_mb"], entry["pinned"] = True, round(m.bytes / 2**20, 1), m.pinned
            models.append(entry)
        pool = self.engine.pool
        # The speaker diarizer (diarize=true): in the same pool, but no transcription model.
        diarizer: dict[str, Any] = {"name": DIARIZER_NAME, "offline": True, "loaded": DIARIZER_NAME in loaded}
        if DIARIZER_NAME in loaded:
            diarizer["memory_mb"] = round(loaded[DIARIZER_NAME].bytes / 2**20, 1)
        return {
            "default": model_label(self.default_model),
            "models": models,
            "diarizer": diarizer,
            "loads": pool.loads,
            "unloads": pool.unloads,
        }

    def _metric_state(self) -> MetricState:
        # Called by the metrics registry at scrape time, off the event loop.
        counts = self.queue.counts()
        pool = self.engine.pool
        return {
            "jobs": counts,
            "queued": counts[JobStatus.QUEUED.value],
            "models_loaded": len(pool.loaded()),
            "loads": pool.loads,
            "unloads": pool.unloads,
        }

    async def metrics_text(self) -> bytes:
        return await to_thread.run_sync(self.metrics.render)

    async def _queue_size(self) -> int:
        """Queued jobs, read from the database at most every HEALTH_COUNT_TTL
        seconds and after any change this process sees (its own jobs at once,
        other replicas' by notification). /health is polled often (load
        balancers, dashboards, agents), and a read is a hop to a thread and
        back, which waits on the inference thread's hold of the GIL."""
        async with self._queued_lock:  # concurrent polls share one read
            cached = self._queued
            version, writing = self.queue.version
            if (
                cached is not None
                and not writing
                and cached[1] == version
                and time.monotonic() - cached[0] < HEALTH_COUNT_TTL
            ):
                return cached[2]
            # Taken before reading: a change during the read makes it stale,
            # and a write under way (it may commit after the read) too.
            read_at = time.monotonic()
            count = await to_thread.run_sync(self.queue.count, JobStatus.QUEUED)
            self._queued = (read_at, -1 if writing else version, count)
            return count

    async def health(self) -> Health:
        self.queue.check_available()  # not ready while the database is away: a 503 that says so
        state = self.worker.state()
        queued = await self._queue_size()
        processing = [RunningJob(job_id=r.job_id, progress=round(r.progress, 4)) for r in self.queue.running()]
        status: Literal["ok", "degraded", "error"] = "ok"
        if state.model_error is not None or not state.running:
            status = "error"
        elif state.waiting is not None:
            status = "degraded"
        return {
            "status": status,
            # running; stopped (the inference thread is gone: restart the
            # process, /livez fails); or what holds it up now (no job starts
            # for lack of disk space, or a job's end cannot be recorded).
            "worker": "stopped" if not state.running else state.waiting or "running",
            "model_loaded": state.model_loaded,
            "model": model_label(self.default_model),
            "model_error": state.model_error,
            "loaded_models": [model_label(name) for name in self.engine.loaded_models],
            "device": self.engine.device,
            "engine": self.engine.engine,
            "compute_type": self.engine.compute_type,
            "encoder_compute_type": self.engine.encoder_compute_type,
            "vad_batching": self.settings.vad_batching,
            "queue_size": queued,
            # Live transcription sessions (/v1/realtime) open here, and how many may be.
            "realtime_sessions": self.live.open_sessions,
            "max_realtime_sessions": self.live.max_sessions,
            # The job being transcribed (the first, when a batch runs), and all of them.
            "processing": processing[0] if processing else None,
            "processing_jobs": processing,
            # Hooks into a library whose names were gone at start-up, and the public path taken instead.
            "compat": cast(list[CompatFallback], compat.lost(self.engine.engine)),
        }


def _report_end(task: asyncio.Task[None]) -> None:
    """A background task must never end unnoticed: its end is logged, with the error."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error("background task %s ended: %r", task.get_name(), exc, exc_info=exc)


def check_format(fmt: str | None) -> str:
    name = (fmt or "txt").strip().lower()
    if name not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    return name


def _no_url(request: JobRequest) -> None:
    """Refuse an audio_url alongside the audio itself."""
    if request.audio_url is not None:
        raise InvalidInput("Send the audio or its audio_url, not both.")


def _check_callback(url: str | None) -> str | None:
    if url is None or url.strip() == "":
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"callback_url must be an http:// or https:// URL, got {redact_url(url)!r}.")
    return url.strip()
