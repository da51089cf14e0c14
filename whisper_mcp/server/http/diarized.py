"""OpenAI's ``diarized_json`` transcription shape, from a diarized result.
Pure functions; ``openai_api`` answers with them."""

from __future__ import annotations

import string
from typing import Any


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
    known speakers keep their given names, and the others, SPEAKER_00,
    SPEAKER_01, ..., become A, B, ... as OpenAI labels them."""
    order = {str(k["name"]): str(k["name"]) for k in result.get("known_speakers") or [] if k.get("matched")}
    letters = 0

    def label_of(speaker: str) -> str:
        nonlocal letters
        if speaker not in order:
            order[speaker], letters = speaker_letter(letters), letters + 1
        return order[speaker]

    for speaker in result.get("speakers") or []:
        label_of(str(speaker))
    segments = []
    for i, s in enumerate(result.get("segments") or []):
        label = label_of(str(s.get("speaker") or ""))
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
