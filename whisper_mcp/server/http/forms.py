"""The multipart form of a transcription request, as ``POST /transcribe`` and
``/v1/audio/transcriptions`` read it: the file, plain fields, and known
speakers as OpenAI sends them (repeated ``known_speaker_names[]`` and
``known_speaker_references[]``, the brackets optional), paired and checked by
``diarization.references.pair``."""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from whisper_mcp.diarization.references import MAX_REFERENCE_FIELD_BYTES, pair
from whisper_mcp.server.http.bodies import FormUpload, check_declared_length, large_fields_bytes, read_multipart
from whisper_mcp.server.service import TranscriptionService

# The OpenAI SDKs send a list as repeated "name[]" parts; some clients omit the brackets.
_NAME_FIELDS = ("known_speaker_names[]", "known_speaker_names")
_REFERENCE_FIELDS = ("known_speaker_references[]", "known_speaker_references")
KNOWN_SPEAKER_FIELDS = _NAME_FIELDS + _REFERENCE_FIELDS
# References are base64 audio: larger than other form fields, and the body gets room for them.
_LARGE_FIELDS = dict.fromkeys(_REFERENCE_FIELDS, MAX_REFERENCE_FIELD_BYTES)


async def read_form(request: Request, service: TranscriptionService, wanted: Collection[str]) -> FormUpload:
    """The form's ``file`` (streamed to disk within the upload limit), its
    ``wanted`` fields and its known speakers' fields; 413 or 507 before
    reading when Content-Length or the disk already says no."""
    room = large_fields_bytes(_LARGE_FIELDS)
    await service.check_space(check_declared_length(request, service.max_upload_bytes, room))
    return await read_multipart(
        request,
        "file",
        service.new_sink,
        (*wanted, *KNOWN_SPEAKER_FIELDS),
        max_bytes=service.max_upload_bytes,
        large_fields=_LARGE_FIELDS,
    )


def names_known_speakers(repeated: dict[str, list[str]]) -> bool:
    """Whether the form sends any known speaker's name or reference."""
    return any(repeated.get(name) for name in KNOWN_SPEAKER_FIELDS)


def known_speakers(repeated: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(name, reference data URL) per known speaker, checked (``references.pair``:
    a 400 in words for unpaired, too many, blank or repeated names, or
    references that are not audio data URLs); empty when none are sent."""
    names = [v for name in _NAME_FIELDS for v in repeated.get(name, [])]
    references = [v for name in _REFERENCE_FIELDS for v in repeated.get(name, [])]
    return pair(names, references)
