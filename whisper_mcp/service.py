"""The service layer: what MCP tools and REST routes both call.

Async methods run on the event loop and push every blocking step (SQLite,
file copies, audio probing) to worker threads; inference happens on the
inference thread alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from anyio import to_thread
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

from .audio import probe_audio
from .callbacks import CallbackSender
from .config import Settings
from .engine import WhisperEngine
from .errors import Conflict, InvalidAudio, InvalidInput, JobNotFound, NotReady
from .jobs import DuplicateJob, Job, JobRequest, JobStatus
from .models import ModelRegistry
from .storage import FileStore, StoredUpload, new_key
from .store import SQLiteJobStore
from .worker import InferenceWorker, recover

log = logging.getLogger("whisper_mcp.service")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

ProgressReporter = Callable[[dict[str, Any]], Awaitable[None]]


class TranscriptionService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files = FileStore(settings.storage)
        self.store = SQLiteJobStore(self.files.database)
        self.registry = ModelRegistry(settings.model_cache)
        self.engine = WhisperEngine(self.registry, settings.device, settings.threads)
        self.default_model = self.registry.resolve(settings.model).name
        self.worker = InferenceWorker(self.store, self.files, self.engine, self.default_model, self._job_changed)
        self.callbacks = CallbackSender(
            self.store,
            self.files,
            public_url=settings.public_url or f"http://{settings.host}:{settings.port}",
            secret=settings.callback_secret,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._callback_task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        again = await to_thread.run_sync(recover, self.store, self.files)
        if again:
            log.info("re-queued %d interrupted job(s): %s", len(again), ", ".join(again))
        self.worker.start()
        self._callback_task = asyncio.create_task(self.callbacks.run(), name="callbacks")

    async def stop(self) -> None:
        if self._callback_task is not None:
            self._callback_task.cancel()
        await to_thread.run_sync(self.worker.stop)

    def _job_changed(self, job_id: str) -> None:
        # Called on the inference thread; wake every waiter on the loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._signal)

    def _signal(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        self.callbacks.kick()

    # -- submitting -------------------------------------------------------

    async def submit(
        self,
        upload: StoredUpload,
        *,
        filename: str | None = None,
        job_id: str | None = None,
        model: str | None = None,
        language: str | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Validate and queue an upload already written under ``incoming/``.

        The upload is consumed: it becomes the job's audio or is removed.
        """
        try:
            request = await self._validate(upload, filename, job_id, model, language, callback_url)
            try:
                job = await to_thread.run_sync(self._enqueue, upload, request)
            except DuplicateJob as dup:
                if dup.existing.audio_sha256 != upload.sha256:
                    raise Conflict(
                        f"job_id {request.job_id!r} is already used by a job with different audio; "
                        "choose another job_id or leave it out to get a generated one"
                    ) from None
                job = dup.existing  # the same upload sent again: answer with the job we have
        finally:
            await to_thread.run_sync(self.files.discard, upload.path)
        if job.status is not JobStatus.QUEUED:  # a re-sent upload of an older job
            return await self.status(job.job_id)
        # Answer from the job as queued: the worker may start it any moment now.
        record = _record(job)
        record["queue_position"] = await to_thread.run_sync(self.store.queue_position, job)
        self.worker.notify()
        log.info("job %s queued model=%s bytes=%d audio=%.1fs", job.job_id, job.model, job.audio_bytes, job.duration)
        return record

    async def _validate(
        self,
        upload: StoredUpload,
        filename: str | None,
        job_id: str | None,
        model: str | None,
        language: str | None,
        callback_url: str | None,
    ) -> JobRequest:
        if job_id is not None and job_id != "":
            if not _JOB_ID.match(job_id):
                raise InvalidInput(
                    "job_id must be 1-128 characters of letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit; or leave it out to get a generated one"
                )
        else:
            job_id = new_key()
        model_info = self.registry.resolve(model or self.default_model)
        language = _check_language(language, model_info.name)
        callback_url = _check_callback(callback_url)
        if upload.size == 0:
            raise InvalidAudio("The uploaded file is empty (0 bytes). Send a WAV, MP3, FLAC, Ogg/Opus or M4A file.")
        info = await to_thread.run_sync(probe_audio, upload.path)
        return JobRequest(
            job_id=job_id,
            key=new_key(),
            filename=(filename or None) and filename[:255],
            model=model_info.name,
            language=language,
            callback_url=callback_url,
            audio_sha256=upload.sha256,
            audio_bytes=upload.size,
            duration=round(info.duration, 3),
        )

    def _enqueue(self, upload: StoredUpload, request: JobRequest) -> Job:
        # Audio lands in place first: a queued job always has its file.
        audio = self.files.accept(upload, request.key)
        try:
            return self.store.add(request, time.time())
        except BaseException:
            self.files.discard(audio)
            raise

    # -- reading ----------------------------------------------------------

    async def _job(self, job_id: str) -> Job:
        job = await to_thread.run_sync(self.store.get, job_id)
        if job is None:
            raise JobNotFound(f"No job with id {job_id!r}. Check the id returned when the file was submitted.")
        return job

    async def status(self, job_id: str) -> dict[str, Any]:
        job = await self._job(job_id)
        record = _record(job)
        if job.status is JobStatus.QUEUED:
            record["queue_position"] = await to_thread.run_sync(self.store.queue_position, job)
        elif job.status is JobStatus.PROCESSING:
            running = self.worker.state().running
            if running is not None and running.job_id == job_id:
                record["progress"] = round(running.progress, 4)
        elif job.status is JobStatus.COMPLETED:
            result = await to_thread.run_sync(self.files.read_result, job.key)
            record["transcript"] = (result or {}).get("text", "")
        return record

    async def wait(self, job_id: str, seconds: float, report: ProgressReporter | None = None) -> dict[str, Any]:
        """Status, after waiting up to ``seconds`` (capped) for the job to finish."""
        deadline = time.monotonic() + max(0.0, min(seconds, self.settings.max_wait_seconds))
        while True:
            changed = self._changed  # taken before reading, so no change is missed
            record = await self.status(job_id)
            remaining = deadline - time.monotonic()
            if JobStatus(record["status"]).finished or remaining <= 0:
                return record
            if report is not None:
                await report(record)
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def transcript(self, job_id: str) -> str:
        job = await self._job(job_id)
        if job.status is not JobStatus.COMPLETED:
            detail = f": {job.error}" if job.error else ""
            raise NotReady(f"Job {job_id!r} is {job.status.value}{detail}; no transcript to download yet.")
        result = await to_thread.run_sync(self.files.read_result, job.key)
        return str((result or {}).get("text", ""))

    async def health(self) -> dict[str, Any]:
        state = self.worker.state()
        queued = await to_thread.run_sync(self.store.count, JobStatus.QUEUED)
        return {
            "status": "ok" if state.model_error is None else "error",
            "model_loaded": state.model_loaded,
            "model": self.default_model,
            "model_error": state.model_error,
            "loaded_models": self.engine.loaded_models,
            "device": self.engine.device,
            "queue_size": queued,
            "processing": None
            if state.running is None
            else {"job_id": state.running.job_id, "progress": round(state.running.progress, 4)},
        }


def _record(job: Job) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "progress": 1.0 if job.status is JobStatus.COMPLETED else 0.0,
        "filename": job.filename,
        "model": job.model,
        "language": job.detected_language or job.language,
        "audio_seconds": job.duration,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
    }
    if job.status is JobStatus.FAILED:
        record["error"] = job.error
    if job.status is JobStatus.COMPLETED:
        record["download_url"] = f"/download/{job.job_id}"
    if job.callback_url is not None:
        record["callback"] = {
            "url": job.callback_url,
            "state": job.callback_state or "waiting for the job to end",
            "attempts": job.callback_attempts,
            "error": job.callback_error,
        }
    return record


def _check_language(language: str | None, model: str) -> str | None:
    if language is None or language.strip() == "" or language.strip().lower() == "auto":
        return None
    lang = language.strip().lower()
    code = lang if lang in LANGUAGES else TO_LANGUAGE_CODE.get(lang)
    if code is None:
        raise InvalidInput(
            f"Unknown language {language!r}. Use a code such as 'en', 'de', 'fr' or a name such as "
            "'german', or leave it out to detect the language."
        )
    if model.endswith(".en") and code != "en":
        raise InvalidInput(f"Model {model!r} is English-only; choose a multilingual model for language {code!r}.")
    return code


def _check_callback(url: str | None) -> str | None:
    if url is None or url.strip() == "":
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"callback_url must be an http:// or https:// URL, got {url!r}.")
    return url.strip()
