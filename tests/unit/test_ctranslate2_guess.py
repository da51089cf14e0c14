"""A live utterance's guess on the ctranslate2 engine (``BatchItem.guess``):
faster-whisper pads each window to 30 s before encoding; a guess encodes only
the frames its audio fills. What it hears: tests/e2e/test_engines_e2e.py."""

from __future__ import annotations

from typing import Any

import numpy as np

from whisper_mcp.engines.ctranslate2 import _unpadded


class Whisper:
    """A stand-in for faster-whisper's ``WhisperModel``: logs what it encodes."""

    def __init__(self) -> None:
        self.model = object()
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, features: np.ndarray) -> Any:
        self.encoded.append(features.shape)
        return "encoded"


def test_a_guess_encodes_only_the_frames_its_audio_fills() -> None:
    whisper = Whisper()
    window = np.zeros((80, 3000), np.float32)  # what faster-whisper hands its encoder
    # 1 s: 100 frames, the last, 15 s of the window's silence (GUESS_PAD_FRAMES), even.
    assert _unpadded(whisper, 16000).encode(window) == "encoded"
    _unpadded(whisper, 16000 + 160).encode(window)
    _unpadded(whisper, 45 * 16000).encode(window)  # never more than the window
    assert whisper.encoded == [(80, 1602), (80, 1602), (80, 3000)]
    assert _unpadded(whisper, 16000).model is whisper.model  # the same CTranslate2 model decodes
