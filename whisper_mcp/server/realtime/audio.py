"""Incoming audio: each format's bytes as float32 samples at 16 kHz, the
rate the models and the voice detector take, converted chunk by chunk as
the client appends them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whisper_mcp.server.realtime import g711

SAMPLE_RATE = 16000
# Each format: (its sample rate, bytes per sample).
FORMATS = {"pcm16": (24000, 2), "g711_ulaw": (8000, 1), "g711_alaw": (8000, 1)}


def pcm(data: bytes, fmt: str) -> np.ndarray:
    """int16 samples of ``data`` in format ``fmt`` (a key of FORMATS); a
    PCM16 chunk of an odd length loses its last byte (``Decoder`` keeps it)."""
    if fmt == "g711_ulaw":
        return g711.decode_ulaw(data)
    if fmt == "g711_alaw":
        return g711.decode_alaw(data)
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")


@dataclass
class Resampler:
    """Linear interpolation from ``rate`` to 16 kHz, carried across chunks, so
    that a stream cut anywhere gives the samples the whole would. (Whisper
    hears up to 8 kHz; PCM16 comes at 24 kHz, G.711 at 8 kHz.)"""

    rate: int
    _held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _position: float = 0.0  # where the next output sample lies, in input samples from _held[0]

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return samples.astype(np.float32)
        held = np.concatenate([self._held, samples.astype(np.float32)])
        step = self.rate / SAMPLE_RATE
        # Only points with a sample on both sides: the last waits for the next chunk.
        points = np.arange(self._position, len(held) - 1, step)
        out = np.interp(points, np.arange(len(held)), held).astype(np.float32)
        following = points[-1] + step if len(points) else self._position
        drop = min(int(following), len(held))
        self._held, self._position = held[drop:], following - drop
        return out


@dataclass
class Decoder:
    """One session's audio bytes, in its format, to 16 kHz float32 in [-1, 1]."""

    fmt: str
    _odd: bytes = b""  # a PCM16 sample split between two appends
    _resampler: Resampler = field(init=False)

    def __post_init__(self) -> None:
        self._resampler = Resampler(FORMATS[self.fmt][0])

    def push(self, data: bytes) -> np.ndarray:
        if self.fmt == "pcm16":
            data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
        return self._resampler.push(pcm(data, self.fmt).astype(np.float32) / 32768.0)


__all__ = ["FORMATS", "SAMPLE_RATE", "Decoder", "Resampler", "pcm"]
