"""MCP tools and resources: the same service as the REST routes, described for agents."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.server.dependencies import get_http_request
from mcp import types as mcp_types
from mcp.shared.exceptions import MCPError
from pydantic import Field
from typing_extensions import TypedDict

from whisper_mcp.compat import fastmcp as fastmcp_hooks
from whisper_mcp.compat.fastmcp.paged import PagedResources
from whisper_mcp.diarization.references import MAX_KNOWN_SPEAKERS, MAX_NAME_CHARS, pair
from whisper_mcp.engines.audio import SUPPORTED_FORMATS
from whisper_mcp.errors import INTERNAL_ERROR, ServiceError, storage_fault
from whisper_mcp.formats import FORMATS, MEDIA_TYPES
from whisper_mcp.options import MAX_SPEAKERS
from whisper_mcp.queue.jobs import JOB_STATUSES
from whisper_mcp.server.audio_urls import MAX_URL_CHARS
from whisper_mcp.server.results import ChunkReceived, Health, JobPage, JobRecord, Models, UploadStarted, UploadUrl
from whisper_mcp.server.service import SUBMISSION_FIELDS, Submission, TranscriptionService

log = logging.getLogger("whisper_mcp.server.mcp")

# What the decoder (PyAV's bundled FFmpeg) takes, said the same way everywhere.
ACCEPTED_AUDIO = f"{SUPPORTED_FORMATS}, WebM, AIFF or any other audio FFmpeg decodes"

# The one base64 rule, in the tool text, README and MONITOR.md alike.
BASE64_GUIDANCE = (
    "A language model writes every base64 character itself, and clients fail above roughly 10 KB "
    "of base64 (about 7 KB of audio: a few seconds), so an agent sends only tiny clips this way. "
    "A program may send up to the 4 MiB MCP request cap (about 3 MB of audio)."
)

INSTRUCTIONS = f"""\
whisper-mcp turns speech recordings into text with OpenAI Whisper, using a model
the server keeps loaded. It accepts {ACCEPTED_AUDIO}. Work is asynchronous:
1. Queue the recording, which returns a job_id at once:
   - a file on your disk: create_upload_url(), then run the curl command it gives;
   - a tiny clip you hold in memory (under about 10 KB of base64): transcribe_wav(audio_base64=...);
   - a large file from a program: begin_upload, upload_chunk..., transcribe_wav(upload_id=...);
   - a recording at an http(s) link: transcribe_wav(audio_url=...); the job fetches it.
2. check_transcription_status(job_id, wait_seconds=45) waits for the job and returns
   the transcript when status is "completed" (or the reason when "failed").
   Call it again while status is "queued", "processing" or "waiting_for_upload"
   (a one-time URL whose file has not arrived yet).
health() tells whether the model is loaded and how long the queue is;
list_models() which models exist; list_transcription_jobs() what is queued;
cancel_transcription(job_id) stops a job. Finished transcripts are also resources
(resources/list shows them, newest first): transcript://{{job_id}}/{{format}} with
format txt, srt, vtt, json or tsv.
"""

Format = Literal["txt", "srt", "vtt", "json", "tsv"]

# MCP mimeType of each transcript format: the HTTP media type without its charset.
RESOURCE_MIME_TYPES = {fmt: MEDIA_TYPES[fmt].split(";")[0].strip() for fmt in FORMATS}

# Finished jobs per resources/list page; each lists one resource per format.
RESOURCE_PAGE_JOBS = 20


# Parameters shared by transcribe_wav and create_upload_url, described once.
FilenameArg = Annotated[str | None, Field(description="Original file name, kept with the job for your reference.")]
JobIdArg = Annotated[
    str | None,
    Field(
        description="Your own id for the job (letters, digits, '.', '_', '-'; up to 128). "
        "Leave it out to get a generated one. Re-sending the same audio with the same id "
        "returns the existing job instead of a second one."
    ),
]
ModelArg = Annotated[
    str | None,
    Field(description="Whisper model, e.g. 'tiny.en' or 'base' (see list_models). Default: the server's."),
]
LanguageArg = Annotated[
    str | None, Field(description="Spoken language as a code ('en', 'de') or name; leave it out to detect it.")
]
TaskArg = Annotated[
    Literal["transcribe", "translate"] | None,
    Field(description="'transcribe' (default) or 'translate' into English (multilingual models)."),
]
PromptArg = Annotated[
    str | None,
    Field(description="Text that primes the vocabulary and style, e.g. names or jargon in the recording."),
]
WordsArg = Annotated[bool, Field(description="Also time each word (shown in the json format).")]
DiarizeArg = Annotated[
    bool,
    Field(
        description="Find who spoke when: every segment gets a speaker (SPEAKER_00, ...), split where the "
        "speaker changes; every format shows them. Offline, slower (about as long again on CPU)."
    ),
]
SpeakersArg = Annotated[
    int | None,
    Field(ge=1, le=MAX_SPEAKERS, description="With diarize: a speaker count hint (exact, at least, at most)."),
]
VadArg = Annotated[
    bool | None,
    Field(
        description="Skip silence: decode only the speech voice-activity detection finds (timestamps stay "
        "in the recording's timeline). Leave it out for the server's default."
    ),
]
HotwordsArg = Annotated[
    str | None,
    Field(description="Words or names to favour while decoding (ctranslate2 engine only; others refuse it)."),
]


class KnownSpeakerArg(TypedDict):
    """A speaker to name: the name, and a short recording of that speaker alone."""

    name: Annotated[str, Field(description=f"The speaker's name, up to {MAX_NAME_CHARS} characters.")]
    reference: Annotated[
        str,
        Field(
            description="2-10 s of this speaker alone (any audio format the server reads): a data URL "
            "('data:audio/wav;base64,...') or the file's base64 alone."
        ),
    ]


KnownSpeakersArg = Annotated[
    list[KnownSpeakerArg] | None,
    Field(
        json_schema_extra={"maxItems": MAX_KNOWN_SPEAKERS},
        description=f"With diarize: up to {MAX_KNOWN_SPEAKERS} known speakers, each a name and a reference "
        "recording. A found speaker whose voice matches a reference is labelled with that name instead of "
        "SPEAKER_00, ... The same checks as /v1's known_speaker_names[] and known_speaker_references[] "
        "(errors name those fields by position). The references travel in this request, so this is for "
        "programs: a 2 s WAV is about 85 KB of base64.",
    ),
]
PriorityArg = Annotated[
    Literal["urgent", "normal", "low"] | None,
    Field(description="Urgent jobs run before waiting normal ones, low after them. Default normal."),
]
CallbackArg = Annotated[str | None, Field(description="http(s) URL that receives a JSON POST when the job ends.")]

# Tool annotations (MCP hints; Codex runs a tool unasked only when it is read-only,
# or neither destructive nor open-world). openWorldHint is false throughout: every
# tool acts on this service's own queue (a callback_url is called back, and an
# audio_url fetched, but only the URL the caller itself named).
READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}
# Adds work (a job, an upload, a URL) and never changes or removes what exists.
# Not idempotent as a tool: a repeat adds another unless the arguments pin it down.
ADDS_WORK = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": False}


def decode_base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ToolError(f"{name} is not valid base64. Encode the raw file bytes, e.g. `base64 -w0 file.wav`.") from None


def _submission(arguments: dict[str, Any]) -> Submission:
    """A tool's arguments that are ``Submission`` fields (its others, such as
    audio_base64, are not), with its known speakers checked; None means "not
    asked for"."""
    speakers = _known_speakers(arguments.get("known_speakers"))
    return Submission(
        **{k: v for k, v in arguments.items() if k in SUBMISSION_FIELDS and v is not None},
        known_speakers=speakers or None,
    )


def _known_speakers(speakers: Sequence[KnownSpeakerArg] | None) -> list[tuple[str, str]]:
    """(name, data URL) per known speaker, checked as /v1's form fields are
    (``references.pair``, ``InvalidInput`` in words)."""
    if not speakers:
        return []
    return pair([s["name"] for s in speakers], [_reference_url(s["reference"]) for s in speakers])


def _reference_url(reference: str) -> str:
    # base64 has no ':', so a reference without one is the file's base64 alone.
    text = reference.strip()
    return text if ":" in text else f"data:application/octet-stream;base64,{text}"


class WhisperMCP(PagedResources):
    """FastMCP, with resources/list answered from the queue: finished transcripts,
    newest first, one page of jobs per request (FastMCP's own listing would
    build every resource first and then slice). The cursor is an offset into
    the completed jobs: a job that completes between two pages moves the
    rest down one, so a client may see an entry twice, but never misses one."""

    def __init__(self, service: TranscriptionService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transcription = service

    # resources/list (compat.fastmcp; tests/unit/test_mcp_resources.py fails
    # if an upgrade stops calling it).
    async def resource_page(self, cursor: str | None) -> mcp_types.ListResourcesResult:
        # This server has no static resources: only the finished transcripts.
        offset = _decode_cursor(cursor)
        page = await self._transcription.list_jobs("completed", RESOURCE_PAGE_JOBS, offset)
        resources = [resource for job in page["jobs"] for resource in transcript_resources(job)]
        next_offset = page["next_offset"]
        return mcp_types.ListResourcesResult(
            resources=resources, next_cursor=None if next_offset is None else _encode_cursor(next_offset)
        )


def transcript_resources(job: JobRecord) -> list[mcp_types.Resource]:
    """The resources of one completed job (as ``list_jobs`` records it): one per format."""
    job_id = job["job_id"]
    name = job.get("filename") or job_id
    finished = job.get("finished_at")
    modified = None if finished is None else datetime.fromtimestamp(finished, UTC).isoformat()
    return [
        mcp_types.Resource(
            uri=f"transcript://{job_id}/{fmt}",
            name=f"{job_id}.{fmt}",
            title=f"{name} ({fmt})",
            description=f"Transcript of {name} (job {job_id}) as {fmt}.",
            mime_type=RESOURCE_MIME_TYPES[fmt],
            annotations=mcp_types.Annotations(last_modified=modified),
        )
        for fmt in FORMATS
    ]


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"jobs:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        offset = int(number)
        if kind != "jobs" or offset < 0:
            raise ValueError(cursor)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise MCPError(
            mcp_types.INVALID_PARAMS, f"Invalid cursor {cursor!r}: pass back a nextCursor as given."
        ) from None
    return offset


def build_mcp(service: TranscriptionService) -> FastMCP:
    fastmcp_hooks.check().raise_if_fatal()  # resources/list depends on it
    mcp = WhisperMCP(service, name="whisper-mcp", instructions=INSTRUCTIONS)
    max_wait = service.max_wait_seconds

    async def call(coro: Any) -> Any:
        # One message style for every tool: the service's own words, and
        # never an exception's own text (it may name server paths).
        try:
            return await coro
        except ServiceError as exc:
            service.count_error(exc.code)
            raise ToolError(exc.message) from None
        except ToolError:
            raise
        except Exception as exc:
            fault = storage_fault(exc)  # a full disk or an unreachable database: plain words, not the driver's
            if fault is not None:
                service.count_error(fault.code)
                raise ToolError(fault.message) from None
            log.exception("MCP tool call failed")
            service.count_error("internal")
            raise ToolError(INTERNAL_ERROR) from None

    # Not idempotent: with a job_id a repeat returns the same job, but without
    # one each call queues another job, and an upload_id is used up by its
    # first call. The hint is per tool, so it says what holds for every call.
    @mcp.tool(annotations=ADDS_WORK)
    async def transcribe_wav(
        audio_base64: Annotated[
            str | None,
            Field(
                description=f"The whole audio file ({ACCEPTED_AUDIO}), base64-encoded. "
                f"{BASE64_GUIDANCE} For a file on your disk use create_upload_url instead; for a "
                "large file in a program, begin_upload/upload_chunk and then upload_id here."
            ),
        ] = None,
        upload_id: Annotated[
            str | None,
            Field(description="The id from begin_upload, once every chunk is sent. Instead of audio_base64."),
        ] = None,
        audio_url: Annotated[
            str | None,
            Field(
                max_length=MAX_URL_CHARS,
                description="Instead of the bytes: an http:// or https:// URL of the recording (e.g. a "
                "pre-signed link). The job fetches it when it runs; if that fails, the job fails saying why.",
            ),
        ] = None,
        filename: FilenameArg = None,
        job_id: JobIdArg = None,
        model: ModelArg = None,
        language: LanguageArg = None,
        task: TaskArg = None,
        initial_prompt: PromptArg = None,
        temperature: Annotated[
            float | None,
            Field(ge=0, le=1, description="Sampling temperature 0-1; leave it out for Whisper's fallback schedule."),
        ] = None,
        beam_size: Annotated[
            int | None,
            Field(
                ge=1,
                le=10,
                description="Beam search width (wider: slower, sometimes more accurate); default: the server's (2 on the default engine).",
            ),
        ] = None,
        word_timestamps: WordsArg = False,
        diarize: DiarizeArg = False,
        num_speakers: SpeakersArg = None,
        min_speakers: SpeakersArg = None,
        max_speakers: SpeakersArg = None,
        known_speakers: KnownSpeakersArg = None,
        vad_filter: VadArg = None,
        hotwords: HotwordsArg = None,
        priority: PriorityArg = None,
        callback_url: CallbackArg = None,
        cache: Annotated[
            bool,
            Field(description="Reuse an earlier transcript of the same audio, model and options (default true)."),
        ] = True,
    ) -> JobRecord:
        """Queue a recording for transcription and return its job_id immediately.

        Send exactly one of audio_base64, upload_id or audio_url (a link the job
        fetches when it runs). This does not wait for the transcript: call
        check_transcription_status with the returned job_id (and wait_seconds up to 50) to get it. The same audio
        with the same model and options returns a cached transcript at once.
        """
        arguments = locals()
        if sum(source is not None for source in (audio_base64, upload_id, audio_url)) != 1:
            raise ToolError(
                "Give exactly one of audio_base64 (the file itself), upload_id (from begin_upload) "
                "or audio_url (where to fetch it)."
            )

        async def submit() -> JobRecord:
            submission = _submission(arguments)  # refuses bad known speakers in words
            if audio_url is not None:
                return await service.submit_url(submission)
            if upload_id is not None:
                return await service.submit_upload(upload_id, submission)
            return await service.submit_bytes(decode_base64(audio_base64 or "", "audio_base64"), submission)

        return await call(submit())

    # Each call opens another upload.
    @mcp.tool(annotations=ADDS_WORK)
    async def begin_upload(
        filename: Annotated[str | None, Field(description="The file's name, kept with the job.")] = None,
        size: Annotated[int | None, Field(gt=0, description="Total size in bytes, if known (recommended).")] = None,
        sha256: Annotated[
            str | None, Field(description="SHA-256 of the whole file (hex); verified before the job is queued.")
        ] = None,
    ) -> UploadStarted:
        """Start a chunked upload, for programs sending files too large for one call.

        Then call upload_chunk(upload_id, offset, data_base64) for each piece (at most
        max_chunk_bytes each, any order; re-sending a chunk is harmless), and finally
        transcribe_wav(upload_id=...). Unfinished uploads expire.
        """
        return await call(service.begin_upload(filename, size, sha256))

    # Idempotent: the same bytes at the same offset again change nothing, and
    # different bytes for a range already received are refused, never written.
    @mcp.tool(annotations={**ADDS_WORK, "idempotentHint": True})
    async def upload_chunk(
        upload_id: Annotated[str, Field(description="The id from begin_upload.")],
        offset: Annotated[int, Field(ge=0, description="Byte offset of this chunk in the file.")],
        data_base64: Annotated[str, Field(description="The chunk's bytes, base64-encoded.")],
    ) -> ChunkReceived:
        """Send one piece of a chunked upload. Answers how many bytes have arrived and,
        when the size was given, whether the upload is complete and which ranges are missing."""
        data = decode_base64(data_base64, "data_base64")
        return await call(service.upload_chunk(upload_id, offset, data))

    # Each call issues another one-time URL, even for the same job_id.
    @mcp.tool(annotations=ADDS_WORK)
    async def create_upload_url(
        filename: FilenameArg = None,
        job_id: JobIdArg = None,
        model: ModelArg = None,
        language: LanguageArg = None,
        task: TaskArg = None,
        initial_prompt: PromptArg = None,
        word_timestamps: WordsArg = False,
        diarize: DiarizeArg = False,
        num_speakers: SpeakersArg = None,
        min_speakers: SpeakersArg = None,
        max_speakers: SpeakersArg = None,
        vad_filter: VadArg = None,
        hotwords: HotwordsArg = None,
        priority: PriorityArg = None,
        callback_url: CallbackArg = None,
    ) -> UploadUrl:
        """Get a one-time URL to upload a file from your shell, keeping its bytes out of this
        conversation. The best way to transcribe a file on your own disk.

        Run the returned command, replacing FILE with the path, e.g.
        `curl --fail-with-body --data-binary @/path/recording.wav '<upload_url>'`
        (or `curl -T /path/recording.wav '<upload_url>'`). No token is needed; the URL
        works once and expires. The upload becomes the returned job_id: then call
        check_transcription_status(job_id, wait_seconds=45). Known speakers are not
        taken here: to name speakers, send the file with transcribe_wav(known_speakers=...).
        """
        submission = _submission(locals())
        base = service.public_url or str(get_http_request().base_url)
        return await call(service.create_upload_url(submission, base))

    # The configured cap, in the schema for clients; a larger value is not
    # refused, it waits max_wait. (Set below: a string annotation, as this
    # module's are, could not see max_wait.)
    wait_arg = Annotated[
        float,
        Field(
            ge=0,
            json_schema_extra={"maximum": max_wait},
            description=f"Wait up to this many seconds (at most {max_wait:g}) for the job to finish "
            "before answering. 0 answers at once. Use about 45 to avoid repeated polling.",
        ),
    ]

    async def check_transcription_status(
        job_id: Annotated[str, Field(description="The job_id that transcribe_wav returned.")],
        wait_seconds: float = 0,
        format: Annotated[
            Format,
            Field(description="Form of the transcript: txt (plain text), srt or vtt (subtitles), json, tsv."),
        ] = "txt",
        ctx: Context | None = None,
    ) -> JobRecord:
        """Return a transcription job's status; with the transcript once it has completed.

        status is one of queued, processing, completed, failed, cancelled (or
        waiting_for_upload: a one-time upload URL's file has not arrived). progress
        is the fraction of the audio transcribed (0 to 1), with eta_seconds while
        processing. When completed, "transcript" holds the text; when failed,
        "error" says why. If the job is still queued or processing when the wait
        ends, call this again: a processing job's "partial_transcript" holds the
        text decoded so far (segments_done segments), so a long recording can be
        read piece by piece. Progress notifications during the wait carry the
        newest text.
        """
        shown = ""  # the partial transcript the last notification covered

        async def report(record: JobRecord) -> None:
            nonlocal shown
            if ctx is None:
                return
            message = record["status"]
            text = str(record.get("partial_transcript") or "")
            if text:
                newest = text[len(shown) :].strip() if text.startswith(shown) else text
                message = f"{message}: {_tail(newest or text)}"
                shown = text
            await ctx.report_progress(float(record.get("progress", 0.0)), 1.0, message)

        return await call(service.wait(job_id, wait_seconds, report, fmt=format))

    check_transcription_status.__annotations__["wait_seconds"] = wait_arg
    mcp.tool(annotations=READ_ONLY)(check_transcription_status)

    # Idempotent: cancelling a job again changes nothing more (it answers that
    # the job has already ended).
    @mcp.tool(
        annotations={"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": False}
    )
    async def cancel_transcription(
        job_id: Annotated[str, Field(description="The job to cancel.")],
    ) -> JobRecord:
        """Cancel a job: a queued one at once, a running one at its next 30-second window."""
        return await call(service.cancel(job_id))

    @mcp.tool(annotations=READ_ONLY)
    async def list_transcription_jobs(
        status: Annotated[
            Literal[JOB_STATUSES] | None,  # type: ignore[valid-type]
            Field(description="Only jobs with this status; leave it out for all."),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Page size.")] = 50,
        offset: Annotated[int, Field(ge=0, description="Jobs to skip; use next_offset from the last page.")] = 0,
    ) -> JobPage:
        """List jobs: running first, then queued ones in the order they will run (with
        queue_position), then ended ones, newest first."""
        return await call(service.list_jobs(status, limit, offset))

    @mcp.tool(annotations=READ_ONLY)
    async def list_models() -> Models:
        """Models this server can use: which work offline and which are loaded now."""
        return await call(service.models())

    @mcp.tool(annotations=READ_ONLY)
    async def health() -> Health:
        """Whether the service is ready: model loaded, which model and engine,
        queue length, and the job (or batch of jobs) in progress."""
        return await call(service.health())

    async def read_transcript(job_id: str, fmt: str) -> str:
        try:
            return await service.transcript(job_id, fmt)
        except ServiceError as exc:
            raise ResourceError(exc.message) from None
        except Exception as exc:
            fault = storage_fault(exc)
            if fault is None:
                raise
            raise ResourceError(fault.message) from None

    @mcp.resource(
        "transcript://{job_id}",
        mime_type=RESOURCE_MIME_TYPES["txt"],
        description="A finished job's transcript as plain text.",
    )
    async def transcript_text(job_id: str) -> str:
        return await read_transcript(job_id, "txt")

    # One template per format, so each carries its own MIME type.
    for fmt in FORMATS:
        mcp.resource(
            f"transcript://{{job_id}}/{fmt}",
            name=f"transcript_{fmt}",
            mime_type=RESOURCE_MIME_TYPES[fmt],
            description=f"A finished job's transcript as {fmt} ({RESOURCE_MIME_TYPES[fmt]}).",
        )(_transcript_reader(read_transcript, fmt))

    return mcp


def _transcript_reader(read: Any, fmt: str) -> Any:
    async def transcript(job_id: str) -> str:
        return await read(job_id, fmt)

    return transcript


# A progress message carries at most this much of the newest text.
NOTIFY_TEXT_CHARS = 500


def _tail(text: str) -> str:
    return text if len(text) <= NOTIFY_TEXT_CHARS else "…" + text[-NOTIFY_TEXT_CHARS:]
