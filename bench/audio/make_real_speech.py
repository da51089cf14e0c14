"""The real-speech recording of bench/ section default, kept in two parts.

    .venv/bin/python bench/audio/make_real_speech.py FOLDER

FOLDER holds each recording of SOURCES.md as NAME.wav with its reference
text in NAME.txt (taken from the packages SOURCES.md names; the sonnets with
their first 1.8 s cut). They are joined in SOURCES.md's order, 0.5 s of
silence apart, as 16 kHz mono 16-bit PCM, and written as two FLAC files
(real_speech.1.flac, real_speech.2.flac: each under 2 MB) and
real_speech.txt. The bench joins the parts again with ``join`` into one FLAC
file, the same bytes as a single file written here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16000
NAMES = [
    "librivox_shakespeare_sonnet_001",
    "librivox_shakespeare_sonnet_002",
    "librivox_shakespeare_sonnet_003",
    "librivox_sense_and_sensibility_0870",
    "librivox_sense_and_sensibility_0880",
    "librivox_sense_and_sensibility_0890",
    "librivox_sense_and_sensibility_0920",
    "librivox_sense_and_sensibility_0930",
    "jfk",
    "librispeech_61-70968-0000",
    "cmusphinx_goforward",
]
HERE = Path(__file__).resolve().parent
PARTS = [HERE / "real_speech.1.flac", HERE / "real_speech.2.flac"]
SPLIT_AT = 100 * SAMPLE_RATE  # the sample where part 2 begins


def _pcm(path: Path) -> np.ndarray:
    """A 16 kHz mono file's samples as int16, exactly as stored."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def write_flac(pcm: np.ndarray, path: Path) -> None:
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def join(parts: Sequence[Path], out: Path) -> Path:
    """The parts' samples, in order, as one FLAC file ``out``."""
    write_flac(np.concatenate([_pcm(p) for p in parts]), out)
    return out


def main(folder: Path) -> None:
    from whisper_mcp.engines.audio import decode_audio

    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    pieces: list[np.ndarray] = []
    for name in NAMES:
        pieces += [decode_audio(folder / f"{name}.wav"), gap]
    # Scaled as the measured file was (bench/ runs of 2026-12-02).
    pcm = (np.clip(np.concatenate(pieces[:-1]), -1, 1) * 32767).astype(np.int16)
    write_flac(pcm[:SPLIT_AT], PARTS[0])
    write_flac(pcm[SPLIT_AT:], PARTS[1])
    texts = [(folder / f"{name}.txt").read_text().strip() for name in NAMES]
    (HERE / "real_speech.txt").write_text(" ".join(texts) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
