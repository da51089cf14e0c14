"""Render a stored transcription result into downloadable text formats.

Pure functions only: the input is the JSON-compatible result dict the service
keeps per job (``text``, ``language``, ``duration``, ``segments`` with optional
``words``; with diarization also a ``speaker`` per segment and top-level
``speakers``, ``num_speakers`` and ``turns``), the output is a ``str``. No I/O and no whisper import, so this is
cheap to import and test. Conventions follow openai-whisper's
``whisper/utils.py`` writers, with the fixes listed on each function.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "format_timestamp",
    "render",
    "to_json",
    "to_srt",
    "to_tsv",
    "to_txt",
    "to_vtt",
    "to_milliseconds",
]

FORMATS: tuple[str, ...] = ("txt", "srt", "vtt", "json", "tsv")

MEDIA_TYPES: dict[str, str] = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    # JSON is UTF-8 by definition (RFC 8259), so no charset parameter.
    "json": "application/json",
    "tsv": "text/tab-separated-values; charset=utf-8",
}

_MS = Decimal("1")


def to_milliseconds(seconds: float) -> int:
    """Seconds -> whole milliseconds, rounding half up on the decimal value.

    ``round(seconds * 1000)`` (what whisper does) suffers from binary float
    error (``1.0005 * 1000 == 1000.4999...``) and banker's rounding; going
    through the shortest decimal repr rounds the number people actually see.
    Negative and non-finite values are rejected: they cannot be timestamps.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"timestamp must be a number of seconds, got {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError(f"timestamp must be finite, got {seconds!r}")
    if value < 0:
        raise ValueError(f"timestamp must be non-negative, got {seconds!r}")
    return int((Decimal(repr(value)) * 1000).quantize(_MS, rounding=ROUND_HALF_UP))


def format_timestamp(seconds: float, decimal_marker: str = ".", always_include_hours: bool = True) -> str:
    """Format seconds as ``HH:MM:SS<marker>mmm``.

    Rounding happens once, on the total, so 1.9996 s becomes ``00:00:02.000``
    rather than ``00:00:01.1000``. Hours keep at least two digits and grow as
    needed (100 h -> ``100:00:00.000``) instead of wrapping or being capped.
    """
    total_ms = to_milliseconds(seconds)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1_000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _segments(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # A result with no speech may carry no "segments" key or a null one.
    return list(result.get("segments") or [])


def _span(segment: Mapping[str, Any]) -> tuple[float, float]:
    """Start/end of a segment; an end before the start is clamped to the start
    so no format ever emits a negative-duration cue."""
    start = segment.get("start", 0.0)
    end = segment.get("end", start)
    to_milliseconds(start)  # validate early so errors name the bad value
    to_milliseconds(end)
    return float(start), max(float(start), float(end))


def _cue_text(text: str) -> str:
    """Make segment text safe inside an SRT/VTT cue.

    A blank line ends a cue and ``-->`` marks a timing line, so either inside
    the text would corrupt the file: blank lines are dropped and ``-->`` is
    rewritten (repeatedly, since ``--->`` -> ``-->``) until none is left.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cleaned = "\n".join(line.strip() for line in lines if line.strip())
    while "-->" in cleaned:
        cleaned = cleaned.replace("-->", "->")
    return cleaned


def _vtt_escape(text: str) -> str:
    # In WebVTT cue text "&" starts a character reference and "<" a tag, so
    # literal ones must be escaped or players may drop/misrender the text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _speaker(segment: Mapping[str, Any]) -> str | None:
    """A diarized segment's speaker, on one line; None when not diarized."""
    speaker = segment.get("speaker")
    return None if speaker is None else " ".join(str(speaker).split()) or None


def _cues(result: Mapping[str, Any]) -> Iterator[tuple[float, float, str, str | None]]:
    """Subtitle cues (start, end, text, speaker) in start order (stable),
    skipping empty ones.

    Players expect non-decreasing start times (WebVTT requires it); whisper
    output already is ordered, so the stable sort is a no-op safety net.
    """
    spans = []
    for segment in _segments(result):
        start, end = _span(segment)
        text = _cue_text(str(segment.get("text") or ""))
        if text:
            spans.append((start, end, text, _speaker(segment)))
    spans.sort(key=lambda cue: to_milliseconds(cue[0]))
    yield from spans


def to_txt(result: Mapping[str, Any]) -> str:
    """Plain transcript with one trailing newline; ``""`` when nothing was said
    (an empty file rather than a lone newline)."""
    text = result.get("text")
    if text is None:
        # Fall back to the segments if the full text was not stored.
        text = "".join(str(s.get("text") or "") for s in _segments(result))
    text = str(text).strip()
    if any(_speaker(s) for s in _segments(result)):
        return _speaker_paragraphs(result)
    return f"{text}\n" if text else ""


def _speaker_paragraphs(result: Mapping[str, Any]) -> str:
    """A diarized transcript: one paragraph per speaker turn, ``SPEAKER: text``."""
    turns: list[list[str]] = []  # [speaker, text]
    for segment in _segments(result):
        text = " ".join(str(segment.get("text") or "").split())
        if not text:
            continue
        speaker = _speaker(segment) or "UNKNOWN"
        if turns and turns[-1][0] == speaker:
            turns[-1][1] += f" {text}"
        else:
            turns.append([speaker, text])
    return "\n".join(f"{speaker}: {text}\n" for speaker, text in turns)


def to_srt(result: Mapping[str, Any]) -> str:
    """SubRip: cues numbered from 1, comma decimal marker, hours always shown,
    cues separated by one blank line. No cues -> ``""``."""
    blocks = [
        f"{index}\n{format_timestamp(start, ',', True)} --> {format_timestamp(end, ',', True)}\n"
        f"{'' if speaker is None else f'[{speaker}] '}{text}\n"
        for index, (start, end, text, speaker) in enumerate(_cues(result), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: Mapping[str, Any]) -> str:
    """WebVTT: ``WEBVTT`` header, then cues with hours always shown (valid for
    any length of audio). No cues -> ``"WEBVTT\\n"``, still a valid file."""
    parts = ["WEBVTT\n"]
    for start, end, text, speaker in _cues(result):
        # A diarized cue names its speaker with a voice span, <v SPEAKER_00>.
        voice = "" if speaker is None else f"<v {_vtt_escape(speaker)}>"
        parts.append(
            f"\n{format_timestamp(start, '.', True)} --> {format_timestamp(end, '.', True)}\n"
            f"{voice}{_vtt_escape(text)}\n"
        )
    return "".join(parts)


def to_tsv(result: Mapping[str, Any]) -> str:
    """``start\\tend\\ttext`` with integer milliseconds, as whisper's writer
    does (no locale-dependent decimal marker). One row per segment, in stored
    order, so rows line up with segment ids; tabs and line breaks in the text
    become spaces so every row keeps exactly three columns. A diarized
    transcript gets a fourth, ``speaker``, before the text."""
    segments = _segments(result)
    diarized = any(_speaker(s) for s in segments)
    rows = ["start\tend\tspeaker\ttext\n" if diarized else "start\tend\ttext\n"]
    for segment in segments:
        start, end = _span(segment)
        text = str(segment.get("text") or "").strip()
        for char in ("\r\n", "\t", "\r", "\n"):
            text = text.replace(char, " ")
        speaker = f"{(_speaker(segment) or '').replace(chr(9), ' ')}\t" if diarized else ""
        rows.append(f"{to_milliseconds(start)}\t{to_milliseconds(end)}\t{speaker}{text}\n")
    return "".join(rows)


def to_json(result: Mapping[str, Any]) -> str:
    """The result as UTF-8-friendly JSON with sorted keys, so identical
    results always serialise to identical bytes (cacheable, diffable)."""
    return json.dumps(dict(result), ensure_ascii=False, sort_keys=True) + "\n"


_RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
    "tsv": to_tsv,
}


def render(result: Mapping[str, Any], fmt: str) -> str:
    """Render ``result`` as ``fmt`` (case-insensitive); unknown formats raise
    ``ValueError`` listing the valid ones so API errors are self-explanatory."""
    renderer = _RENDERERS.get(fmt.lower().strip()) if isinstance(fmt, str) else None
    if renderer is None:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return renderer(result)
