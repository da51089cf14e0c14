"""Known speakers as a client sends them (OpenAI's ``known_speaker_names[]`` and
``known_speaker_references[]``): names paired with audio data URLs, checked
and turned into short 16 kHz mono WAV recordings to store with the job.

``pair`` is pure and cheap (the request's fields); ``read_reference`` decodes
audio, so it blocks: call it off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_mcp.engines.audio import SAMPLE_RATE, stream_audio
from whisper_mcp.errors import InvalidAudio, InvalidInput

# OpenAI's limits: at most 4 known speakers, each reference 2 to 10 seconds.
MAX_KNOWN_SPEAKERS = 4
MIN_REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SECONDS = 10.0
# Decoders round a clip's length a little either way.
_LENGTH_TOLERANCE = 0.05
# 10 s of 48 kHz stereo 16-bit WAV is 1.9 MB; nothing longer is wanted.
MAX_REFERENCE_BYTES = 2 * 2**20
# The base64 of that, with its data URL prefix: the form field's own limit.
MAX_REFERENCE_FIELD_BYTES = MAX_REFERENCE_BYTES * 4 // 3 + 256
MAX_NAME_CHARS = 64
# A name is printed in transcripts and echoed in answers: line breaks become
# spaces, and other control characters (ESC, NUL, ...) and lone surrogates go.
_NAME_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]+")
_NAME_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DATA_URL = re.compile(r"^data:(audio/[\w.+-]+|application/octet-stream)(;[\w.+-]+=[\w.+-]+)*;base64,", re.I)


@dataclass(frozen=True)
class KnownSpeaker:
    """A known speaker's name and reference recording (16 kHz mono 16-bit WAV)."""

    name: str
    wav: bytes
    seconds: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.wav).hexdigest()


def clean_name(raw: str) -> str:
    """A speaker's name as it is kept: line breaks and tabs as one space, no
    other control characters, no space at either end."""
    return _NAME_CONTROLS.sub("", _NAME_BREAKS.sub(" ", raw)).strip()


def pair(names: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    """(name, data URL) for each known speaker, the names cleaned (``clean_name``);
    ``InvalidInput`` in words for unpaired, too many, blank, over-long or
    repeated names, or references that are not base64 audio data URLs. Empty
    when neither is given."""
    if not names and not references:
        return []
    if len(names) != len(references):
        raise InvalidInput(
            f"known_speaker_names has {len(names)} entries and known_speaker_references {len(references)}: "
            "give one reference recording per name, in the same order."
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise InvalidInput(f"At most {MAX_KNOWN_SPEAKERS} known speakers per request, got {len(names)}.")
    cleaned: list[tuple[str, str]] = []
    for i, (raw, url) in enumerate(zip(names, references, strict=True)):
        name = clean_name(raw)
        if not name:
            raise InvalidInput(f"known_speaker_names[{i}] is blank; give each known speaker a name.")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"known_speaker_names[{i}] is longer than {MAX_NAME_CHARS} characters.")
        if any(name == earlier for earlier, _ in cleaned):
            raise InvalidInput(f"known_speaker_names lists {name!r} twice; each name once.")
        if not _DATA_URL.match(url.strip()):
            raise InvalidInput(
                f"known_speaker_references[{i}] ({name}) must be an audio data URL such as "
                "'data:audio/wav;base64,...' (base64 of a 2-10 s recording of that speaker alone)."
            )
        cleaned.append((name, url.strip()))
    return cleaned


def decode_data_url(url: str, index: int, name: str) -> bytes:
    payload = url.split(",", 1)[1] if "," in url else ""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"known_speaker_references[{index}] ({name}) is not valid base64 after 'base64,'.") from None
    if not data:
        raise InvalidInput(f"known_speaker_references[{index}] ({name}) holds no audio.")
    if len(data) > MAX_REFERENCE_BYTES:
        raise InvalidInput(
            f"known_speaker_references[{index}] ({name}) is {len(data) / 2**20:.1f} MiB; at most "
            f"{MAX_REFERENCE_BYTES // 2**20} MiB (a 2-10 s recording)."
        )
    return data


def read_reference(index: int, name: str, url: str) -> KnownSpeaker:
    """Blocking: decode a reference to 16 kHz mono; ``InvalidInput`` if it is
    not audio this server reads, or not 2 to 10 seconds long."""
    data = decode_data_url(url, index, name)
    where = f"known_speaker_references[{index}] ({name})"
    limit = int((MAX_REFERENCE_SECONDS + _LENGTH_TOLERANCE) * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="whisper-mcp-reference-") as tmp:
        path = Path(tmp) / "reference"
        path.write_bytes(data)
        try:
            for piece in stream_audio(path):
                pieces.append(piece)
                if sum(len(p) for p in pieces) > limit:
                    break
        except InvalidAudio as exc:
            raise InvalidInput(f"{where} is not audio this server can read: {exc.message}") from None
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    seconds = len(samples) / SAMPLE_RATE
    if len(samples) > limit:
        raise InvalidInput(f"{where} is longer than {MAX_REFERENCE_SECONDS:.0f} s; send 2-10 s of that speaker.")
    if seconds < MIN_REFERENCE_SECONDS - _LENGTH_TOLERANCE:
        raise InvalidInput(f"{where} is {seconds:.1f} s long; send 2-10 s of that speaker.")
    return KnownSpeaker(name, to_wav(samples), round(seconds, 3))


def to_wav(samples: np.ndarray) -> bytes:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())
    return out.getvalue()


__all__ = [
    "MAX_KNOWN_SPEAKERS",
    "MAX_REFERENCE_FIELD_BYTES",
    "KnownSpeaker",
    "clean_name",
    "decode_data_url",
    "pair",
    "read_reference",
    "to_wav",
]
