"""CTranslate2 Whisper folders with int8 weights on disk.

The packaged and downloaded models store float16 weights; CTranslate2 loading
one as int8 reads the whole file and converts every weight, which for a
moment takes about three times the memory the int8 model then keeps (base:
RSS peaked 257 MB above where it started, and kept 85 MB). A copy whose
weights are int8 already loads at about what it keeps. The weights are
quantized as CTranslate2 quantizes them at load (a scale per output row,
127 over the row's largest magnitude, rounded to the nearest integer), so the
model computes the same: the encoder's output is bit for bit that of the
float16 folder loaded as int8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from whisper_mcp.models.convert import Ct2Binary
from whisper_mcp.models.derived import ensure_derived_folder

# Bump when what int8_weights makes changes, so old folders are rebuilt.
_FORMAT = 1
_FLOATS = (np.float16, np.float32)


def quantizable(name: str, array: np.ndarray) -> bool:
    """A weight CTranslate2 keeps in int8 with an int8 compute type: a linear
    layer's or the embedding's (two dimensions; the convolutions stay float)."""
    return name.endswith("/weight") and array.ndim == 2 and array.dtype in _FLOATS


def int8_weights(binary: Ct2Binary) -> Ct2Binary:
    """``binary`` with each ``quantizable`` weight in int8 beside its
    ``<name>_scale`` (float32, one per row); other variables as they are."""
    variables: dict[str, np.ndarray] = {}
    for name, array in binary.variables.items():
        if not quantizable(name, array):
            variables[name] = array
            continue
        weight = array.astype(np.float32)
        amax = np.amax(np.abs(weight), axis=1)
        amax[amax == 0] = 127.0
        amax = np.maximum(amax, np.float32(127) / np.finfo(np.float32).max)  # a tiny row's scale stays finite
        scale = (127.0 / amax).astype(np.float32)
        variables[name] = np.rint(weight * scale[:, None]).astype(np.int8)
        variables[f"{name}_scale"] = scale
    aliases = dict(binary.aliases)
    for alias, target in binary.aliases.items():  # the output projection is the embedding: its scale too
        if f"{target}_scale" in variables:
            aliases[f"{alias}_scale"] = f"{target}_scale"
    return Ct2Binary(binary.spec, binary.revision, variables, aliases)


def ensure_int8_folder(folder: Path, cache_dir: Path) -> Path:
    """``cache_dir/<name>-<hash>``: ``folder`` with int8 weights (models.derived);
    a folder whose weights are int8 already is copied as it is."""
    return ensure_derived_folder(folder, cache_dir, int8_weights, _FORMAT)


__all__ = ["ensure_int8_folder", "int8_weights", "quantizable"]
