"""Join the real-speech recordings into real_speech.flac and real_speech.txt.

    .venv/bin/python bench/audio/make_real_speech.py FOLDER

FOLDER holds each recording of SOURCES.md as NAME.wav with its reference
text in NAME.txt (taken from the packages SOURCES.md names; the sonnets with
their first 1.8 s cut). They are joined in SOURCES.md's order, 0.5 s of
silence apart, as 16 kHz mono 16-bit FLAC.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

from whisper_mcp.engines.audio import SAMPLE_RATE, decode_audio

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


def main(folder: Path) -> None:
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    parts: list[np.ndarray] = []
    for name in NAMES:
        parts += [decode_audio(folder / f"{name}.wav"), gap]
    pcm = (np.clip(np.concatenate(parts[:-1]), -1, 1) * 32767).astype(np.int16)
    with av.open(str(HERE / "real_speech.flac"), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    texts = [(folder / f"{name}.txt").read_text().strip() for name in NAMES]
    (HERE / "real_speech.txt").write_text(" ".join(texts) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
