"""Streamed log-Mel features (whisper_mcp.engines.mel) against openai-whisper's own
``log_mel_spectrogram`` over the whole waveform. Model-free and fast."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from whisper_mcp.engines.audio import decode_audio, stream_audio

from helpers import FIXTURES, LONG_AUDIO

# Lengths around every edge: shorter than the reflected margin (200), one STFT
# window (400), one hop, one 30 s chunk (160 * 3000 samples), and several chunks.
LENGTHS = [1, 150, 200, 201, 399, 400, 1000, 160 * 3000 - 1, 160 * 3000, 160 * 3000 + 1, 2 * 160 * 3000 + 77]


# Both import torch, which takes an xdist worker a second or two: imported by
# the tests that use them rather than by every worker that collects this file.
@pytest.fixture(scope="module")
def whisper() -> ModuleType:
    import whisper

    return whisper


@pytest.fixture(scope="module")
def mel() -> ModuleType:
    from whisper_mcp.engines import mel

    return mel


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_whole_waveform_features(whisper: ModuleType, mel: ModuleType, n: int, n_mels: int) -> None:
    rng = np.random.default_rng(n)
    audio = (rng.standard_normal(n) * 0.1).astype(np.float32)
    expected = whisper.log_mel_spectrogram(audio, n_mels, padding=whisper.audio.N_SAMPLES)
    # Blocks of uneven sizes, some empty, as a decoder hands them out.
    blocks = np.split(audio, sorted(rng.integers(0, n, size=6)))
    got = mel.log_mel(blocks, n_mels, expected_seconds=n / 16000)
    assert got.mel.shape == expected.shape
    assert got.samples == n
    assert got.content_frames == expected.shape[-1] - whisper.audio.N_FRAMES
    np.testing.assert_allclose(got.mel.numpy(), expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("guess", [0.0, 5.0, 1000.0])
def test_a_wrong_length_guess_changes_nothing(whisper: ModuleType, mel: ModuleType, guess: float) -> None:
    audio = decode_audio(FIXTURES / "speech.wav")
    expected = whisper.log_mel_spectrogram(audio, 80, padding=whisper.audio.N_SAMPLES)
    got = mel.log_mel([audio], 80, expected_seconds=guess)
    np.testing.assert_allclose(got.mel.numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_streamed_file_matches_decoded_file(whisper: ModuleType, mel: ModuleType) -> None:
    # 62 s of MP3, in the pieces the decoder yields: three 30 s chunks.
    pieces = list(stream_audio(LONG_AUDIO))
    assert len(pieces) > 100
    whole = decode_audio(LONG_AUDIO)
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    expected = whisper.log_mel_spectrogram(whole, 80, padding=whisper.audio.N_SAMPLES)
    got = mel.log_mel(stream_audio(LONG_AUDIO), 80)
    np.testing.assert_allclose(got.mel.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    assert got.duration == pytest.approx(len(whole) / 16000)
