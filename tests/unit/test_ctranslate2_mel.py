"""Long recordings' features a block at a time (engines.ctranslate2_mel):
faster-whisper's features, without holding every frame's spectrum at once."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_mcp.engines.ctranslate2_mel import BLOCK_FRAMES, BlockwiseMel

pytest.importorskip("faster_whisper")
from faster_whisper.feature_extractor import FeatureExtractor  # noqa: E402


def _waveform(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(11)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.2 * t) > 0)  # on and off
    return (tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_long_recording_gets_faster_whispers_features() -> None:
    waveform = _waveform(BLOCK_FRAMES / 100 * 2.5)  # two and a half blocks
    expected = FeatureExtractor()(waveform)
    got = BlockwiseMel(FeatureExtractor())(waveform)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=3e-7)  # the filters' product may round apart


def test_short_recording_goes_to_faster_whisper_unchanged() -> None:
    waveform = _waveform(30.0)  # a whole window, as language identification computes it
    assert np.array_equal(BlockwiseMel(FeatureExtractor())(waveform), FeatureExtractor()(waveform))


def test_everything_else_is_the_extractors() -> None:
    extractor = FeatureExtractor()
    blockwise = BlockwiseMel(extractor)
    assert BlockwiseMel.fits(extractor) and not BlockwiseMel.fits(object())
    assert (blockwise.nb_max_frames, blockwise.time_per_frame) == (3000, 0.01)
    blockwise(_waveform(BLOCK_FRAMES / 100 + 1), chunk_length=20)  # as faster-whisper's: sets the window
    assert (extractor.n_samples, blockwise.nb_max_frames) == (320000, 2000)
