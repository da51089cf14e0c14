"""OpenAI's ``diarized_json`` transcription shape, from a diarized result.
Pure functions; ``openai_api`` answers with them."""

from __future__ import annotations

import string
from typing import Any

from whisper_mcp.errors import InvalidInput

# The multipart fields OpenAI's SDKs send for known speakers (repeated "name[]").
KNOWN_SPEAKER_FIELDS = (
    "known_speaker_names[]",
    "known_speaker_names",
    "known_speaker_references[]",
    "known_speaker_references",
)


def check_known_speakers(repeated: dict[str, list[str]]) -> None:
    """Known speakers are not matched yet: refuse them rather than ignore them."""
    given = [name.rstrip("[]") for name in KNOWN_SPEAKER_FIELDS if repeated.get(name)]
    if given:
        raise InvalidInput(
            f"{' and '.join(dict.fromkeys(given))} are not supported by this server yet: leave them out, and "
            "speakers are labelled A, B, ... in order of first appearance."
        )


def speaker_letter(index: int) -> str:
    """A, B, ... Z, AA, AB, ...: OpenAI's labels for speakers not named."""
    letters = string.ascii_uppercase
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = letters[rest] + label
    return label


def diarized_json(result: dict[str, Any]) -> dict[str, Any]:
    """``{task, duration, text, segments: [{id, start, end, speaker, text, type}], usage}``;
    speakers SPEAKER_00, SPEAKER_01, ... become A, B, ... as OpenAI labels them."""
    order: dict[str, str] = {}
    for speaker in result.get("speakers") or []:
        order.setdefault(str(speaker), speaker_letter(len(order)))
    segments = []
    for i, s in enumerate(result.get("segments") or []):
        speaker = str(s.get("speaker") or "")
        label = order.setdefault(speaker, speaker_letter(len(order)))
        segments.append(
            {
                "id": f"seg_{i:03d}",
                "start": float(s.get("start", 0.0)),
                "end": float(s.get("end", 0.0)),
                "speaker": label,
                "text": str(s.get("text") or "").strip(),
                "type": "transcript.text.segment",
            }
        )
    duration = float(result.get("duration") or 0.0)
    return {
        "task": "transcribe",
        "duration": duration,
        "text": str(result.get("text") or ""),
        "segments": segments,
        "usage": {"type": "duration", "seconds": duration},
    }
