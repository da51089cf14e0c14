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


# The detector's frame: 32 ms at 16 kHz, seen with the 64 samples before it.
FRAME = 512
_CONTEXT = 64


class SpeechProbabilities:
    """The same detector over a stream (live transcription): the probability
    of speech in each 32 ms frame as audio arrives, with the detector's state
    carried from chunk to chunk, so a stream gets the probabilities its whole
    recording would. The model is faster-whisper's one shared copy."""

    def __init__(self) -> None:
        self._held = np.zeros(0, np.float32)  # less than a frame, waiting for the rest
        self._context = np.zeros(_CONTEXT, np.float32)
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Blocking (the model): one probability per whole frame now complete."""
        from faster_whisper.vad import get_vad_model

        held = np.concatenate([self._held, np.asarray(samples, np.float32)])
        count = len(held) // FRAME
        self._held = held[count * FRAME :]
        if count == 0:
            return np.zeros(0, np.float32)
        frames = held[: count * FRAME].reshape(count, FRAME)
        contexts = np.concatenate([self._context[None], frames[:-1, -_CONTEXT:]])
        self._context = frames[-1, -_CONTEXT:].copy()
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1))
        out, self._h, self._c = get_vad_model().session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(out, np.float32).reshape(-1)


__all__ = ["FRAME", "SpeechProbabilities", "speech_spans"]
