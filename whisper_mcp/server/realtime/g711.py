"""G.711 decoding (ITU-T G.711): the 256 sample values of mu-law and A-law
bytes as 16-bit PCM, computed once per decode from the standard's formulas
(``audioop``, which did this, left the standard library in Python 3.13)."""

from __future__ import annotations

import numpy as np

_BYTES = np.arange(256, dtype=np.int32)


def ulaw_table() -> np.ndarray:
    """int16 value of each mu-law byte (0xFF and 0x7F are the two zeros)."""
    u = ~_BYTES & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def alaw_table() -> np.ndarray:
    """int16 value of each A-law byte (even bits inverted, sign bit set = positive)."""
    a = _BYTES ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


def decode_ulaw(data: bytes) -> np.ndarray:
    return ulaw_table()[np.frombuffer(data, dtype=np.uint8)]


def decode_alaw(data: bytes) -> np.ndarray:
    return alaw_table()[np.frombuffer(data, dtype=np.uint8)]


__all__ = ["alaw_table", "decode_alaw", "decode_ulaw", "ulaw_table"]
