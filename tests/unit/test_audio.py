"""Decoding and validation of uploads (whisper_mcp.engines.audio). Model-free and fast.

Fixtures come from tests/fixtures/make_fixtures.py; every speech.* file holds the
same espeak-ng recording (speech.txt) in a different format.
"""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import numpy as np
import pytest

from whisper_mcp.engines.audio import SAMPLE_RATE, AudioInfo, decode_audio, probe_audio
from whisper_mcp.errors import InvalidAudio

from crafted_audio import crafted, mutated
from helpers import FIXTURES

SUPPORTED = "WAV, MP3, FLAC, Ogg/Opus, M4A/AAC"

# name -> (format, codec, source sample rate, channels, min correlation with speech.wav)
GOOD = {
    "speech.wav": ("wav", "pcm_s16le", 16000, 1, 0.9999),
    "speech_stereo_44k.wav": ("wav", "pcm_s16le", 44100, 2, 0.999),
    "speech_8k_u8.wav": ("wav", "pcm_u8", 8000, 1, 0.97),  # 4 kHz band limit + 8-bit noise
    "speech.flac": ("flac", "flac", 16000, 1, 0.9999),
    "speech.mp3": ("mp3", "mp3", 16000, 1, 0.97),  # FFmpeg's decoder is "mp3float"
    "speech.opus": ("ogg", "opus", 48000, 1, 0.97),  # Opus always decodes at 48 kHz
    "speech.m4a": ("mov,mp4,m4a,3gp,3g2,mj2", "aac", 16000, 1, 0.97),
}

BAD = {
    "empty.wav": "empty (0 bytes)",
    "not_audio.bin": "not a recognised audio format",
    "truncated.wav": "truncated",
    "video_only.mp4": "no audio stream",
}


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return decode_audio(FIXTURES / "speech.wav")


@pytest.mark.parametrize("name", GOOD)
def test_good_fixture_decodes_to_float32_mono_16k(name: str, reference: np.ndarray) -> None:
    audio = decode_audio(FIXTURES / name)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(len(audio) - len(reference)) / SAMPLE_RATE < 0.1
    assert -1.0 <= audio.min() and audio.max() <= 1.0
    assert np.abs(audio).max() > 0.5  # speech at a sane level, not silence


@pytest.mark.parametrize("name", GOOD)
def test_probe_reports_source_facts(name: str, reference: np.ndarray) -> None:
    fmt, codec, rate, channels, _ = GOOD[name]
    info = probe_audio(FIXTURES / name)
    assert info.format == fmt
    assert info.codec.startswith(codec)
    assert info.sample_rate == rate
    assert info.channels == channels
    assert abs(info.duration - len(reference) / SAMPLE_RATE) < 0.1


@pytest.mark.parametrize("name", GOOD)
def test_decodes_agree_with_wav(name: str, reference: np.ndarray) -> None:
    audio = decode_audio(FIXTURES / name)
    n = min(len(audio), len(reference))
    corr = np.corrcoef(audio[:n], reference[:n])[0, 1]
    assert corr > GOOD[name][4]


def test_lossless_decodes_are_identical(reference: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_audio(FIXTURES / "speech.flac"), reference)


def test_short_fixture() -> None:
    info = probe_audio(FIXTURES / "short.wav")
    assert 1.5 < info.duration < 3.0
    samples = len(decode_audio(FIXTURES / "short.wav"))
    assert samples == pytest.approx(info.duration * SAMPLE_RATE, abs=2)
    assert (FIXTURES / "short.txt").read_text().strip()
    assert (FIXTURES / "speech.txt").read_text().strip()


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("func", [probe_audio, decode_audio], ids=["probe", "decode"])
def test_bad_fixture_is_rejected(name: str, func, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidAudio) as excinfo:
        func(FIXTURES / name)
    assert BAD[name] in excinfo.value.message
    assert excinfo.value.code == "invalid_audio"
    # FFmpeg must not have logged anything to the terminal.
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", ["empty.wav", "not_audio.bin", "video_only.mp4"])
def test_messages_name_supported_formats(name: str) -> None:
    with pytest.raises(InvalidAudio, match="WAV, MP3, FLAC, Ogg/Opus, M4A/AAC"):
        probe_audio(FIXTURES / name)


def test_missing_file_is_not_an_upload_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_audio(tmp_path / "nope.wav")


def test_audio_info_is_frozen() -> None:
    info = probe_audio(FIXTURES / "short.wav")
    assert isinstance(info, AudioInfo)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.duration = 0.0  # type: ignore[misc]


# --- WAV header edge cases, built in tmp_path --------------------------------------


def _wav_parts() -> tuple[bytes, bytes]:
    """speech.wav split into (bytes up to and including the fmt chunk, PCM data)."""
    data = (FIXTURES / "speech.wav").read_bytes()
    at = data.index(b"data")
    size = int.from_bytes(data[at + 4 : at + 8], "little")
    return data[:at], data[at + 8 : at + 8 + size]


def _wav(head: bytes, pcm: bytes, declared: int, extra_chunk: bytes = b"") -> bytes:
    body = head[12:] + extra_chunk + b"data" + declared.to_bytes(4, "little") + pcm
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WAVE" + body


def test_header_only_wav_is_truncated(tmp_path: Path) -> None:
    head, pcm = _wav_parts()
    path = tmp_path / "hdr.wav"
    path.write_bytes(_wav(head, b"", len(pcm)))
    with pytest.raises(InvalidAudio, match="truncated"):
        probe_audio(path)


def test_truncation_found_past_odd_sized_chunk(tmp_path: Path) -> None:
    head, pcm = _wav_parts()
    odd = b"junk" + (3).to_bytes(4, "little") + b"abc" + b"\0"  # padded to even
    path = tmp_path / "odd.wav"
    path.write_bytes(_wav(head, pcm, len(pcm), odd))
    assert probe_audio(path).duration == pytest.approx(len(pcm) / 2 / SAMPLE_RATE)
    path.write_bytes(_wav(head, pcm[: len(pcm) // 2], len(pcm), odd))
    with pytest.raises(InvalidAudio, match="truncated"):
        probe_audio(path)


def test_streaming_wav_without_size_is_accepted(tmp_path: Path) -> None:
    # Writers streaming to a pipe leave the data size at 0xFFFFFFFF: length unknown,
    # so a short file must not be called truncated.
    head, pcm = _wav_parts()
    path = tmp_path / "stream.wav"
    path.write_bytes(_wav(head, pcm[: len(pcm) // 2], 0xFFFFFFFF))
    assert probe_audio(path).duration == pytest.approx(len(pcm) / 4 / SAMPLE_RATE, abs=0.01)


def test_loud_stereo_is_averaged_not_clipped(tmp_path: Path) -> None:
    # Identical channels at 0.9 of full scale: FFmpeg's default downmix would give
    # 0.9 * 1.41 and clip; the channel average stays at 0.9.
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.9 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    path = tmp_path / "loud.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.repeat(tone, 2).tobytes())
    audio = decode_audio(path)
    assert np.abs(audio).max() == pytest.approx(0.9, abs=0.01)


def test_24bit_48k_wav_matches_its_16bit_source() -> None:
    info = probe_audio(FIXTURES / "short_48k_24bit.wav")
    assert (info.codec, info.sample_rate, info.channels) == ("pcm_s24le", 48000, 1)
    a = decode_audio(FIXTURES / "short.wav")
    b = decode_audio(FIXTURES / "short_48k_24bit.wav")
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) < SAMPLE_RATE * 0.02
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.99


# -- crafted headers (the fuzz corpus) ----------------------------------------------


@pytest.mark.parametrize(("name", "data"), list(crafted().items()))
def test_crafted_header_is_refused_with_words(name: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.wav"
    path.write_bytes(data)
    for read in (probe_audio, decode_audio):
        with pytest.raises(InvalidAudio) as refused:
            read(path)
        message = str(refused.value)
        assert "Re-export" in message or "Mix it down" in message, message


def test_mutated_headers_decode_or_are_refused(tmp_path: Path) -> None:
    outcomes = {"decoded": 0, "refused": 0}
    for name, data in mutated(150).items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        try:
            probe_audio(path, 4 * 3600)
            samples = decode_audio(path)
        except InvalidAudio:
            outcomes["refused"] += 1
        else:
            assert np.isfinite(samples).all()
            outcomes["decoded"] += 1
    assert outcomes["decoded"] and outcomes["refused"]  # the corpus exercises both
