"""Whisper's log-Mel features, computed from audio as it is decoded.

openai-whisper's ``log_mel_spectrogram`` takes the whole waveform and runs one
STFT over it: for a 30-minute file that is 115 MB of samples plus ~450 MB of
STFT intermediates at once. ``log_mel`` computes the same matrix 30 s at a
time from a stream of sample blocks, so only the result (~2 MB per minute of
audio) and one window's intermediates are ever held.

The result equals ``whisper.log_mel_spectrogram(audio, n_mels,
padding=N_SAMPLES)`` (float rounding aside): the same centred STFT with
reflected edges, the same trailing 30 s of silence that ``transcribe`` slices
against, and the same normalisation against the whole file's maximum, which is
why that step waits for the last block. ``transcribe()`` takes a ``Mel`` in
place of audio through a patch of its module (``compat.openai_whisper``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from whisper.audio import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE, mel_filters

# Frames computed per STFT call: 30 s, so intermediates stay ~7 MB.
_CHUNK_FRAMES = N_FRAMES
_EDGE = N_FFT // 2  # the reflected margin of a centred STFT


@dataclass(frozen=True)
class Mel:
    """A waveform's log-Mel spectrogram, padded with 30 s of silence as
    ``transcribe`` expects; ``samples`` counts the audio before padding."""

    mel: torch.Tensor  # (n_mels, frames), float32, CPU
    samples: int

    @property
    def n_mels(self) -> int:
        return int(self.mel.shape[0])

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def content_frames(self) -> int:
        return int(self.mel.shape[-1]) - N_FRAMES


def log_mel(blocks: Iterable[np.ndarray], n_mels: int = 80, expected_seconds: float = 0.0) -> Mel:
    """The log-Mel features of the concatenated float32 ``blocks`` (16 kHz mono).

    ``expected_seconds`` (e.g. the duration found when the upload was probed)
    sizes the output once up front; a wrong guess costs a copy, not a wrong result.
    """
    window = torch.hann_window(N_FFT)
    filters = mel_filters("cpu", n_mels)
    out = _Growing(n_mels, int(expected_seconds * SAMPLE_RATE + N_SAMPLES) // HOP_LENGTH + 1)
    peak = -np.inf

    pending: list[np.ndarray] = []  # samples not yet turned into frames
    pending_len = 0
    samples = 0
    started = False
    for block, is_audio in _with_padding(blocks):
        if is_audio:
            samples += len(block)
        pending.append(block)
        pending_len += len(block)
        if not started:
            if pending_len <= _EDGE:
                continue  # the left reflection needs samples 1..200
            head = np.concatenate(pending)
            pending, started = [head[_EDGE:0:-1].copy(), head], True
            pending_len = len(head) + _EDGE
        if pending_len >= (_CHUNK_FRAMES - 1) * HOP_LENGTH + N_FFT + HOP_LENGTH:
            buffer = np.concatenate(pending)
            frames = (len(buffer) - N_FFT) // HOP_LENGTH + 1
            peak = max(peak, _frames(buffer, frames, window, filters, out))
            rest = buffer[frames * HOP_LENGTH :]
            pending, pending_len = [rest], len(rest)

    # Right edge: reflect the last samples, then every frame the centred STFT
    # would make, less its final one (as log_mel_spectrogram drops it).
    buffer = np.concatenate(pending)
    buffer = np.concatenate([buffer, buffer[-2 : -_EDGE - 2 : -1]])
    total = (samples + N_SAMPLES) // HOP_LENGTH
    frames = total - out.used
    if frames > 0:
        peak = max(peak, _frames(buffer, frames, window, filters, out))
    mel = out.result()
    torch.maximum(mel, torch.tensor(peak - 8.0), out=mel)
    mel.add_(4.0).div_(4.0)
    return Mel(mel, samples)


def _with_padding(blocks: Iterable[np.ndarray]) -> Iterable[tuple[np.ndarray, bool]]:
    for block in blocks:
        if len(block):
            yield np.asarray(block, dtype=np.float32), True
    yield np.zeros(N_SAMPLES, dtype=np.float32), False


def _frames(buffer: np.ndarray, frames: int, window: torch.Tensor, filters: torch.Tensor, out: _Growing) -> float:
    """Append the log10 Mel energies of the first ``frames`` frames of
    ``buffer`` (which starts at a frame's first sample) to ``out``; return their maximum."""
    signal = torch.from_numpy(buffer[: (frames - 1) * HOP_LENGTH + N_FFT])
    stft = torch.stft(signal, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
    magnitudes = stft.abs() ** 2
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    out.append(log_spec)
    return float(log_spec.max())


class _Growing:
    """A (rows, n) float32 matrix filled column blocks at a time, allocated once
    when the expected size is right."""

    def __init__(self, rows: int, capacity: int) -> None:
        self._data = torch.empty(rows, max(capacity, 1))
        self.used = 0

    def append(self, block: torch.Tensor) -> None:
        end = self.used + block.shape[1]
        if end > self._data.shape[1]:
            grown = torch.empty(self._data.shape[0], max(end, self._data.shape[1] * 3 // 2))
            grown[:, : self.used] = self._data[:, : self.used]
            self._data = grown
        self._data[:, self.used : end] = block
        self.used = end

    def result(self) -> torch.Tensor:
        view = self._data[:, : self.used]
        # A close guess keeps its small unused tail; a poor one is copied to free it.
        return view if self.used * 10 >= self._data.shape[1] * 9 else view.clone()
