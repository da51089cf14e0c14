"""The log-mel spectrogram of a long recording for faster-whisper, a block
of frames at a time.

faster-whisper computes the features of the whole waveform at once, and its
short-time Fourier transform holds every frame windowed (float32) and its
spectrum (complex128, then complex64) together: about 8 kB per 10 ms frame,
so 250 MB more for a 5-minute file (measured) and about 1.5 GB for half an
hour, for a moment, where the features themselves take 320 bytes a frame.
``BlockwiseMel`` computes the mel power of ``BLOCK_FRAMES`` frames at a
time, with faster-whisper's own transform, filters and window, and then the
logarithm and the clamp to 8 below the loudest value over the whole
recording, as faster-whisper does. A frame's spectrum does not depend on its
neighbours, so the features are faster-whisper's, up to the rounding of the
filters' matrix product (5 minutes of speech: 2 of 2.4 million values
differ, by 1.2e-7). Recordings of up to 30 s (a window, as language
identification computes) go to faster-whisper's own extractor unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_FRAMES = 3000  # 30 s of 10 ms frames
# What the stand-in uses of faster-whisper's FeatureExtractor.
_NEEDED = ("stft", "mel_filters", "n_fft", "hop_length", "sampling_rate")


class BlockwiseMel:
    """Stands in for faster-whisper's ``FeatureExtractor`` (``WhisperModel.feature_extractor``):
    calls compute the features a block at a time; everything else is the extractor's."""

    def __init__(self, extractor: Any) -> None:
        self._extractor = extractor

    @staticmethod
    def fits(extractor: Any) -> bool:
        """Whether ``extractor`` has what the stand-in uses (else it is used as it is)."""
        return all(hasattr(extractor, name) for name in _NEEDED)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        fe = self._extractor
        hop, n_fft = fe.hop_length, fe.n_fft
        if len(waveform) <= BLOCK_FRAMES * hop:  # up to 30 s (one window): faster-whisper's own
            return fe(waveform, padding=padding, chunk_length=chunk_length)
        if chunk_length is not None:  # as faster-whisper's: the window it pads to
            fe.n_samples = chunk_length * fe.sampling_rate
            fe.nb_max_frames = fe.n_samples // hop
        waveform = np.pad(np.asarray(waveform, dtype=np.float32), (0, padding))
        # The transform's centring, once for the whole waveform; blocks then overlap by a frame's length.
        padded = np.pad(waveform, (n_fft // 2, n_fft // 2), mode="reflect")
        window = np.hanning(n_fft + 1)[:-1].astype("float32")
        frames = (len(padded) - n_fft) // hop  # faster-whisper drops the last one
        mel = np.empty((fe.mel_filters.shape[0], frames), dtype=np.float32)
        for start in range(0, frames, BLOCK_FRAMES):
            end = min(start + BLOCK_FRAMES, frames)
            piece = padded[start * hop : (end - 1) * hop + n_fft]
            spectrum = fe.stft(piece, n_fft, hop, window=window, center=False, return_complex=True)
            mel[:, start:end] = fe.mel_filters @ (np.abs(spectrum.astype("complex64")) ** 2)
        log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


__all__ = ["BLOCK_FRAMES", "BlockwiseMel"]
