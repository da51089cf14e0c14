"""The statistics the figures are made of."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def pct(xs: Sequence[float], p: float) -> float:
    """numpy's linear percentile ``p`` (0-100) of ``xs``."""
    return float(np.percentile(np.asarray(xs, dtype=float), p))
