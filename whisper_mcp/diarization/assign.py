"""Give transcribed words their speakers and split segments where the speaker
changes. Pure functions over the engine's records: no I/O, no model.

A word belongs to the speaker whose turn overlaps it most; a word in a gap
between turns (the diarizer's voice detection is stricter than Whisper's word
timing) goes to the nearest turn. A segment is split wherever consecutive words
change speaker, so no segment spans two speakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from whisper_mcp.engines.base import Segment, Word


@dataclass(frozen=True)
class Turn:
    """One stretch of speech by one speaker, in seconds."""

    speaker: str
    start: float
    end: float


def speaker_label(index: int) -> str:
    return f"SPEAKER_{index:02d}"


def relabel(turns: Sequence[Turn], names: dict[str, str] | None = None) -> tuple[list[Turn], dict[str, str]]:
    """Turns in start order with speakers renamed SPEAKER_00, SPEAKER_01, ... in
    order of first appearance (``names`` maps a diarizer's label to a given name
    instead, and the others are numbered among themselves); and the mapping
    used, diarizer label -> new label."""
    ordered = sorted(turns, key=lambda t: (t.start, t.end))
    mapping: dict[str, str] = {}
    unnamed = 0
    for turn in ordered:
        if turn.speaker not in mapping:
            given = (names or {}).get(turn.speaker)
            if given is None:
                given, unnamed = speaker_label(unnamed), unnamed + 1
            mapping[turn.speaker] = given
    return [replace(t, speaker=mapping[t.speaker]) for t in ordered], mapping


def speaker_at(turns: Sequence[Turn], start: float, end: float) -> str | None:
    """The speaker of the span start..end: most overlap, else the nearest turn;
    None when there are no turns."""
    best: tuple[float, str] | None = None
    for turn in turns:
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > 0 and (best is None or overlap > best[0]):
            best = (overlap, turn.speaker)
    if best is not None:
        return best[1]
    nearest: tuple[float, str] | None = None
    middle = (start + end) / 2
    for turn in turns:
        distance = turn.start - middle if middle < turn.start else max(0.0, middle - turn.end)
        if nearest is None or distance < nearest[0]:
            nearest = (distance, turn.speaker)
    return None if nearest is None else nearest[1]


def _piece(segment: Segment, index: int, words: list[Word], speaker: str | None, keep_words: bool) -> Segment:
    """Part of ``segment``: its decoder figures are the whole window's, kept;
    its token ids only while the piece is the whole segment."""
    whole = segment.words is not None and len(words) == len(segment.words)
    return replace(
        segment,
        id=index,
        start=words[0].start,
        end=max(words[0].start, words[-1].end),
        text="".join(w.word for w in words).strip(),
        words=list(words) if keep_words else None,
        tokens=segment.tokens if whole else None,
        speaker=speaker,
    )


def assign_speakers(segments: Sequence[Segment], turns: Sequence[Turn], *, keep_words: bool) -> list[Segment]:
    """Segments with a ``speaker`` each, split where the speaker changes between
    words, renumbered from 0. ``keep_words`` False drops the word timings (asked
    for only to split by)."""
    out: list[Segment] = []
    for segment in segments:
        if not segment.words:  # no word timings (e.g. nothing but noise): the segment's span decides
            speaker = speaker_at(turns, segment.start, segment.end)
            out.append(replace(segment, id=len(out), speaker=speaker, words=segment.words if keep_words else None))
            continue
        run: list[Word] = []
        run_speaker: str | None = None
        for word in segment.words:
            speaker = speaker_at(turns, word.start, word.end)
            if run and speaker != run_speaker:
                out.append(_piece(segment, len(out), run, run_speaker, keep_words))
                run = []
            run.append(word)
            run_speaker = speaker
        if run:
            out.append(_piece(segment, len(out), run, run_speaker, keep_words))
    # A split can leave a piece of nothing but a blank word; drop those.
    kept = [s for s in out if s.text or len(out) == 1]
    return [replace(s, id=i) for i, s in enumerate(kept)]


def speaker_turns(segments: Sequence[Segment]) -> list[dict[str, object]]:
    """Consecutive segments of one speaker joined: the transcript's turns, with
    their text (the ``txt`` format's paragraphs)."""
    joined: list[dict[str, object]] = []
    for segment in segments:
        if joined and joined[-1]["speaker"] == segment.speaker:
            joined[-1]["end"] = segment.end
            joined[-1]["text"] = f"{joined[-1]['text']} {segment.text}".strip()
        else:
            joined.append(
                {"speaker": segment.speaker, "start": segment.start, "end": segment.end, "text": segment.text}
            )
    return joined
