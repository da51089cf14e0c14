"""In-process audio decoding with PyAV, so the service needs no system ffmpeg.

``probe_audio`` validates an upload by decoding it once in a stream (nothing is
kept, so memory stays flat however long the file is); ``decode_audio`` returns
the float32 mono 16 kHz samples Whisper expects, and ``stream_audio`` the same
samples piece by piece. Both raise ``InvalidAudio``
with a message the uploader can act on.

FFmpeg's log output: PyAV installs a silent log callback when it is imported
(``av.logging`` level ``None``), so decoding damaged files prints nothing to
stderr and this module leaves the process-wide setting alone. Should an
operator raise the level, messages go to Python's ``libav.*`` loggers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from whisper_mcp.errors import AudioTooLong, InvalidAudio

SAMPLE_RATE = 16000

SUPPORTED_FORMATS = "WAV, MP3, FLAC, Ogg/Opus, M4A/AAC"

# A header may overstate the length a little (codec padding, rounding); only a
# larger shortfall means data is missing.
_TRUNCATION_TOLERANCE_S = 0.25

# Containers whose header records the exact length, as PyAV names them. Others
# (MP3, Ogg) report an estimate or a value read from the file's end, which
# says nothing about truncation. WAV is handled apart: see _wav_declared_bytes.
_EXACT_LENGTH_FORMATS = frozenset({"flac", "mov,mp4,m4a,3gp,3g2,mj2"})

# What the mono 16 kHz downmix can use. FFmpeg has default channel layouts for
# 1-8 channels only (a 9-channel WAV fails in the resampler), and a rate below
# 1 kHz carries no speech while it multiplies the samples Whisper must read (a
# 1 Hz WAV of 1 KB lasts minutes); 384 kHz is the highest rate recorders use.
MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
# Sample formats that can hold NaN or infinity; integer ones cannot.
_FLOAT_FORMATS = frozenset({"flt", "fltp", "dbl", "dblp"})


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds of decoded audio
    format: str  # container name as PyAV reports it, e.g. "wav", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    sample_rate: int  # source rate
    channels: int


def probe_audio(path: Path, max_seconds: float | None = None) -> AudioInfo:
    """Decode ``path`` fully without keeping samples; return facts about it.

    Raises ``InvalidAudio`` for empty, unrecognised, audio-less, corrupt,
    truncated or sample-less files, and for audio longer than ``max_seconds``
    (checked from the header first, so a too-long file is refused quickly).
    A missing file raises ``FileNotFoundError``: that is the caller's bug, not
    the uploader's.
    """
    with _open(path) as container:
        stream = _audio_stream(container)
        if max_seconds is not None:
            _check_length(_header_seconds(container, stream), max_seconds)
        duration = 0.0
        for frame in _decode(container, stream, path):
            duration += frame.samples / frame.sample_rate
            if max_seconds is not None and duration > max_seconds:
                _check_length(duration, max_seconds)
        ctx = stream.codec_context
        return AudioInfo(
            duration=duration,
            format=container.format.name,
            codec=ctx.name,
            sample_rate=ctx.sample_rate,
            channels=ctx.channels,
        )


def _header_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _check_length(seconds: float | None, max_seconds: float) -> None:
    if seconds is not None and seconds > max_seconds + 0.5:
        raise AudioTooLong(
            f"The recording is {seconds / 60:.1f} minutes long; this server accepts at most "
            f"{max_seconds / 60:.1f} minutes per file. Split it into shorter parts."
        )


def decode_audio(path: Path) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``SAMPLE_RATE``, values in [-1, 1].

    Raises ``InvalidAudio`` in the same cases as ``probe_audio``.
    """
    # One concatenation at the end instead of growing an array per frame.
    chunks = list(stream_audio(path))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def stream_audio(path: Path) -> Iterator[np.ndarray]:
    """``decode_audio`` in pieces, as they are decoded (a few thousand samples
    each), so a long file need never be held whole. Concatenated, the pieces
    are exactly what ``decode_audio`` returns; errors are raised when reached.
    """
    with _open(path) as container:
        stream = _audio_stream(container)
        resampler: AudioResampler | None = None
        source: tuple[str, str, int] | None = None
        for frame in _decode(container, stream, path):
            # PyAV's resampler refuses frames whose format differs from the
            # first one (e.g. an MP3 that changes rate midway): start a new one.
            shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if resampler is None or shape != source:
                if resampler is not None:
                    yield from _to_arrays(_resample(resampler, None))
                resampler, source = _mono_resampler(), shape
            yield from _to_arrays(_resample(resampler, frame))
        if resampler is not None:
            # The resampler holds back a filter's worth of samples until flushed.
            yield from _to_arrays(_resample(resampler, None))


def first_seconds(audio: Path | np.ndarray, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a file (decoded only that far) or of samples."""
    limit = int(seconds * SAMPLE_RATE)
    if isinstance(audio, np.ndarray):
        return audio[:limit]
    pieces: list[np.ndarray] = []
    have = 0
    for piece in stream_audio(audio):
        pieces.append(piece)
        have += len(piece)
        if have >= limit:
            break
    return np.concatenate(pieces)[:limit] if pieces else np.zeros(0, dtype=np.float32)


def _resample(resampler: AudioResampler, frame: AudioFrame | None) -> list[AudioFrame]:
    try:
        return resampler.resample(frame)
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        # A channel layout or sample format the downmix cannot convert.
        raise InvalidAudio(
            f"The audio could not be converted to mono 16 kHz ({exc.strerror}). Re-export it as "
            f"16-bit PCM WAV, mono or stereo, or another supported format ({SUPPORTED_FORMATS})."
        ) from exc


def _mono_resampler() -> AudioResampler:
    # rematrix_maxval=1 makes the downmix average the channels. FFmpeg's default
    # stereo->mono matrix adds them at -3 dB each, so a loud stereo file would
    # come out up to 1.41x over full scale and then be clipped.
    return AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options={"rematrix_maxval": "1.0"})


def _to_arrays(frames: list[AudioFrame]) -> Iterator[np.ndarray]:
    # Packed "flt" mono gives shape (1, samples); flatten to 1-D. Resampling can
    # overshoot slightly and float sources may exceed 1.0: clip to [-1, 1].
    for frame in frames:
        samples = frame.to_ndarray().reshape(-1)
        yield np.clip(samples, -1.0, 1.0, out=samples)


def _open(path: Path) -> InputContainer:
    if path.stat().st_size == 0:
        raise InvalidAudio(
            "The audio file is empty (0 bytes). Upload a complete recording in a "
            f"supported format ({SUPPORTED_FORMATS})."
        )
    try:
        # metadata_errors="ignore": a badly encoded tag must not reject the audio.
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise InvalidAudio(
            "The file is not a recognised audio format, or it is damaged or "
            "truncated so that its format cannot be read. Supported formats: "
            f"{SUPPORTED_FORMATS}."
        ) from exc
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise  # missing file, permissions: a server problem, not the upload's
        raise InvalidAudio(
            f"The file could not be opened as audio ({exc.strerror}). Supported formats: {SUPPORTED_FORMATS}."
        ) from exc


def _audio_stream(container: InputContainer) -> AudioStream:
    # best() skips streams whose parameters FFmpeg could not work out; fall back
    # to the first one so a damaged file is reported as damaged, not audio-less.
    stream = cast(AudioStream | None, container.streams.best("audio") or next(iter(container.streams.audio), None))
    if stream is None:
        raise InvalidAudio(
            f"The file is a media file ({container.format.name}) but contains no "
            f"audio stream. Upload audio in a supported format ({SUPPORTED_FORMATS})."
        )
    # No decoder for the header's codec (an unknown WAV format tag, 0 bits per
    # sample, a damaged WAVE_FORMAT_EXTENSIBLE header): FFmpeg opens the file
    # but leaves the stream without a codec context.
    if stream.codec_context is None:
        raise InvalidAudio(
            f"The file's {container.format.name} header names an audio encoding this server cannot "
            "decode (an unknown format tag, 0 bits per sample or a damaged header). Re-export it as "
            f"16-bit PCM WAV or another supported format ({SUPPORTED_FORMATS})."
        )
    _check_shape(stream.codec_context.channels, stream.codec_context.sample_rate)
    return stream


def _check_shape(channels: int, sample_rate: int) -> None:
    """Refuse channel counts and rates the downmix to mono 16 kHz cannot use;
    0 means the header does not say (the decoded frames are checked too)."""
    if channels > MAX_CHANNELS:
        raise InvalidAudio(
            f"The audio has {channels} channels; this server accepts at most {MAX_CHANNELS}. "
            "Mix it down to mono or stereo and upload again."
        )
    if sample_rate and not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(
            f"The audio's sample rate is {sample_rate} Hz; this server accepts {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz (speech is usually 8000-48000 Hz). Re-export it at 16000 Hz."
        )


def _check_frame(frame: AudioFrame) -> None:
    _check_shape(frame.layout.nb_channels, frame.sample_rate)
    if frame.format.name in _FLOAT_FORMATS and not np.isfinite(frame.to_ndarray()).all():
        raise InvalidAudio(
            "The audio holds invalid samples (NaN or infinity), so it cannot be transcribed. "
            "Re-export the recording from its source."
        )


def _decode(container: InputContainer, stream: AudioStream, path: Path) -> Iterator[AudioFrame]:
    """Yield the stream's decoded frames, then raise if the result is unusable.

    Like the ffmpeg command line, a packet the decoder rejects is skipped rather
    than failing the whole file; the checks at the end catch files where that
    left nothing, or where the header promised far more than was decoded.
    """
    declared = _declared_duration(container, stream, path)
    decoded = 0.0
    bad_packets = 0
    try:
        # demux() ends with an empty packet per stream, which flushes the decoder.
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad_packets += 1
                continue
            for frame in frames:
                if not frame.sample_rate:
                    bad_packets += 1
                    continue
                _check_frame(frame)
                decoded += frame.samples / frame.sample_rate
                yield frame
    except av.FFmpegError as exc:
        raise InvalidAudio(
            f"The audio file is corrupt: reading it failed after {decoded:.1f} s "
            f"({exc.strerror}). Re-export or re-upload the file."
        ) from exc

    if declared is not None and declared - decoded > _TRUNCATION_TOLERANCE_S:
        raise InvalidAudio(
            "The audio file appears truncated or damaged: its header promises "
            f"{declared:.1f} s of audio but only {decoded:.1f} s could be decoded. "
            "Re-upload the complete file."
        )
    if decoded == 0:
        if bad_packets:
            raise InvalidAudio(
                "The audio data is corrupt or uses an unsupported codec "
                f"({stream.codec_context.name}); nothing could be decoded. "
                f"Supported formats: {SUPPORTED_FORMATS}."
            )
        raise InvalidAudio(
            "No audio samples could be decoded: the file's audio stream is empty or "
            "corrupt. Upload a complete recording in a supported format "
            f"({SUPPORTED_FORMATS})."
        )


def _declared_duration(container: InputContainer, stream: AudioStream, path: Path) -> float | None:
    """Length in seconds the file's header promises, where that is exact; else None."""
    if container.format.name == "wav":
        data_bytes = _wav_declared_bytes(path)
        bit_rate = stream.codec_context.bit_rate if stream.codec_context is not None else 0
        if data_bytes is None or not bit_rate:
            return None
        return data_bytes * 8 / bit_rate
    if container.format.name in _EXACT_LENGTH_FORMATS and stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _wav_declared_bytes(path: Path) -> int | None:
    """Size of the WAV ``data`` chunk according to the header, or None if unknown.

    Needed because FFmpeg's WAV demuxer quietly clamps the length to what the file
    holds, so PyAV's durations never reveal a truncated WAV.
    """
    with path.open("rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return None  # RF64 and others: no 32-bit size to trust
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                # Streaming writers leave the size at 0 or 0xFFFFFFFF.
                return None if size in (0, 0xFFFFFFFF) else size
            f.seek(size + (size & 1), 1)  # chunks are padded to even sizes
