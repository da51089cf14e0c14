"""Crafted audio headers that broke the service once: the fuzz corpus.

Each is a small WAV whose header the decoder cannot use (an unknown format
tag, 0 bits per sample, a damaged WAVE_FORMAT_EXTENSIBLE header), or that it
decodes into something Whisper cannot use (255 channels, a 1 Hz rate, NaN
samples). Every one must be refused with a 400 that says why, never a 5xx.
"""

from __future__ import annotations

import random
import struct

import numpy as np

from helpers import FIXTURES


def wav(
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    pcm: bytes | None = None,
    fmt_extra: bytes = b"",
    block: int | None = None,
) -> bytes:
    pcm = pcm if pcm is not None else np.zeros(channels * 1600, np.int16).tobytes()
    block = block if block is not None else channels * max(bits, 8) // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits) + fmt_extra
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _extensible(cb_size: int, payload: bytes) -> bytes:
    return struct.pack("<H", cb_size) + payload


def crafted() -> dict[str, bytes]:
    """Name -> file bytes, each to be refused with a 400."""
    floats = lambda value: np.full(16000, value, np.float32).tobytes()  # noqa: E731
    return {
        "format-tag-0x1234": wav(tag=0x1234),
        "zero-bits": wav(bits=0, block=2),
        "extensible-zero-subformat": wav(tag=0xFFFE, fmt_extra=_extensible(22, b"\0" * 22)),
        "extensible-cut-short": wav(tag=0xFFFE, fmt_extra=_extensible(22, b"")),
        "extensible-unknown-guid": wav(
            tag=0xFFFE, fmt_extra=_extensible(22, struct.pack("<HI", 16, 4) + b"\x34\x12" + b"\xab" * 14)
        ),
        "255-channels": wav(channels=255),
        "9-channels": wav(channels=9),
        "1-hz": wav(rate=1, pcm=np.zeros(600, np.int16).tobytes()),
        "768-khz": wav(rate=768_000, pcm=np.zeros(76_800, np.int16).tobytes()),
        "float-nan": wav(tag=3, bits=32, pcm=floats(np.nan)),
        "float-inf": wav(tag=3, bits=32, pcm=floats(np.inf)),
        "double-nan": wav(tag=3, bits=64, pcm=np.full(16000, np.nan, np.float64).tobytes()),
    }


def mutated(count: int, seed: int = 12) -> dict[str, bytes]:
    """``short.wav`` with a few bytes of its header changed at random (seeded):
    each may decode or be refused, but only ever with a 400."""
    base = (FIXTURES / "short.wav").read_bytes()
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(8, 44)] = rng.randrange(256)
        out[f"mutated-{i}"] = bytes(data)
    return out
