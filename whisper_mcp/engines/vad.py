"""Where a recording has speech: voice-activity detection for the per-job
``vad_filter`` option.

The detector is faster-whisper's (Silero VAD, the ONNX model its wheel ships,
run by onnxruntime; offline), with its default settings, the very one that
``--vad-batching`` and faster-whisper's own ``vad_filter`` use, so both
engines skip the same silence. The ctranslate2 backend lets faster-whisper
run it; the openai backend asks here for the spans and decodes only those
(openai-whisper's ``clip_timestamps``), so timestamps stay in the
recording's own timeline.
"""

from __future__ import annotations

import numpy as np

from whisper_mcp.engines.audio import SAMPLE_RATE


def speech_spans(samples: np.ndarray) -> list[tuple[float, float]]:
    """The speech in 16 kHz mono float32 ``samples``, as (start, end) seconds in
    order, padded as faster-whisper pads them; empty for silence or noise."""
    # Imported here: only jobs that ask for VAD load onnxruntime (never torch).
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if len(samples) == 0:
        return []
    chunks = get_speech_timestamps(np.ascontiguousarray(samples, dtype=np.float32), VadOptions(), SAMPLE_RATE)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


__all__ = ["speech_spans"]
