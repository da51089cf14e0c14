"""The audio the sections send: decoded fixtures, WAV files cut, repeated or
synthesised from them, silence and noise, and the long real-speech recordings."""

from __future__ import annotations

import random
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.audio import make_real_speech
from bench.context import BENCH, FIXTURES, Ctx

SAMPLE_RATE = 16000
# 200 s of real read speech with its reference text (public domain and
# permissive sources: bench/audio/SOURCES.md), timed and scored in section
# default; stored in two parts, joined into the run's folder (real_speech()).
REAL_SPEECH_TEXT = BENCH / "audio" / "real_speech.txt"


def decoded(path: Path) -> np.ndarray:
    from whisper_mcp.engines.audio import decode_audio  # PyAV + numpy only, no torch

    return decode_audio(path)


def write_wav(path: Path, chunks: Iterator[np.ndarray] | list[np.ndarray]) -> float:
    """Write float32 chunks as 16 kHz mono 16-bit PCM; returns seconds written."""
    n = 0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for chunk in chunks:
            w.writeframes((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
            n += len(chunk)
    return n / SAMPLE_RATE


def concatenated(
    source: np.ndarray, seconds: float, seed: int, gap: tuple[float, float] = (0.2, 1.5)
) -> Iterator[np.ndarray]:
    """``source`` repeated with small random gaps of faint noise, up to ``seconds``."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    written = 0
    while written < total:
        piece = source[: total - written]
        yield piece
        written += len(piece)
        if written >= total:
            break
        g = min(int(rng.uniform(*gap) * SAMPLE_RATE), total - written)
        yield (rng.standard_normal(g) * 1e-3).astype(np.float32)
        written += g


def make_clips(directory: Path, count: int, seed: int = 1) -> list[Path]:
    """``count`` clips of 5-10 s cut at random (seeded) from long.mp3, as WAV files."""
    audio = decoded(FIXTURES / "long.mp3")
    rng = random.Random(seed)
    total = len(audio) / SAMPLE_RATE
    paths = []
    for i in range(count):
        length = rng.uniform(5.0, 10.0)
        start = rng.uniform(0.0, total - length)
        a, b = int(start * SAMPLE_RATE), int((start + length) * SAMPLE_RATE)
        path = directory / f"clip{i:02d}.wav"
        write_wav(path, [audio[a:b]])
        paths.append(path)
    return paths


def noise_clips(ctx: Ctx) -> dict[str, Path]:
    """Silence and noise, written as WAV files: name -> path."""
    rng = np.random.default_rng(11)
    seconds = ctx.pick(60.0, 30.0)
    n = int(seconds * SAMPLE_RATE)
    clips = {
        f"silence, {seconds:.0f} s": np.zeros(n, dtype=np.float32),
        f"faint hiss, {seconds:.0f} s": (rng.standard_normal(n) * 0.003).astype(np.float32),
        f"white noise, {seconds:.0f} s": (rng.standard_normal(n) * 0.1).astype(np.float32),
        f"brown noise, {seconds:.0f} s": _brown(rng, n),
    }
    paths = {}
    for i, (name, audio) in enumerate(clips.items()):
        paths[name] = ctx.workdir / f"noise{i}.wav"
        write_wav(paths[name], [audio])
    return paths


def _brown(rng: np.random.Generator, n: int) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal(n))
    walk -= np.convolve(walk, np.ones(4001) / 4001, mode="same")  # no slow drift
    return (walk / (np.abs(walk).max() or 1.0) * 0.3).astype(np.float32)


def long_clips(ctx: Ctx) -> list[tuple[Path, str]]:
    """The long recordings timed: long.mp3, long.mp3 four times over (4 min,
    where batched decoding has chunks to batch), real speech (bench/audio),
    and --recording's if given."""
    text = (FIXTURES / "long.txt").read_text()
    four = ctx.workdir / "long_x4.wav"
    if not four.exists():
        write_wav(four, [decoded(FIXTURES / "long.mp3")] * 4)
    clips = [(FIXTURES / "long.mp3", text), (four, " ".join([text] * 4))]
    clips.append((real_speech(ctx.workdir), REAL_SPEECH_TEXT.read_text()))
    return clips + ([ctx.recording] if ctx.recording else [])


def real_speech(workdir: Path) -> Path:
    """bench/audio's two parts joined into ``workdir/real_speech.flac`` (once)."""
    out = workdir / "real_speech.flac"
    if not out.exists():
        make_real_speech.join(make_real_speech.PARTS, out)
    return out


def cut_at_pauses(audio: np.ndarray, shortest: float = 5.0, longest: float = 10.0) -> list[np.ndarray]:
    """``audio`` in pieces of ``shortest``-``longest`` seconds (the last may be
    shorter), each cut at the quietest 0.1 s between those lengths: short
    clips of real speech whose joined transcripts score against the whole
    recording's reference."""
    pieces, start = [], 0
    while len(audio) - start > longest * SAMPLE_RATE:
        lo, hi = start + int(shortest * SAMPLE_RATE), start + int(longest * SAMPLE_RATE)
        energy = np.convolve(audio[lo:hi] ** 2, np.ones(1600) / 1600, mode="same")
        cut = lo + 800 + int(np.argmin(energy[800:-800]))
        pieces.append(audio[start:cut])
        start = cut
    return [*pieces, audio[start:]]


def short_clips(workdir: Path, source: Path, reference: str) -> tuple[list[Path], str]:
    """``source`` cut at pauses (``cut_at_pauses``) into WAV files in
    ``workdir``, and the reference their transcripts, joined, score against."""
    paths = []
    for i, piece in enumerate(cut_at_pauses(decoded(source))):
        paths.append(workdir / f"{source.stem}.cut{i:02d}.wav")
        write_wav(paths[-1], [piece])
    return paths, reference
