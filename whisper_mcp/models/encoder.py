"""Encoder-only (and decoder-only) CTranslate2 Whisper folders: the encoder
on its own model, with its own precision and threads.

On CPU the int8 encoder costs accuracy while the int8 decoder costs none that
the bench can see, and the decoder is most of the time (tiny.en, one 30 s
window: encode 0.24 s int8 / 0.26 s float32, greedy decode 0.78 s int8 / 1.09 s
float32). So the ctranslate2 engine may encode with a second, float32 model
and decode with the int8 one (``--encoder-compute-type``); the second model
also lets the encoder use every core while the decoder, whose small
per-token products lose to the threads' fork and join, runs on one
(``--decoder-threads``). CTranslate2 loads
whole models only, so that second model is a copy of the folder whose decoder
is cut down to one layer, with a feed-forward of eight units, and an
eight-token vocabulary: about a quarter of the memory of the whole float32
model (tiny.en: RSS grew 41 MiB against 145 MiB, 37 MiB with the smaller
feed-forward). Its encoder output is the full float32 model's, bit for bit.

The int8 model then never encodes (an English-only one: a multilingual
model identifies languages on its own encoder), so it may load from the
mirror copy, its encoder cut down the same way (tiny.en: 6 MiB less).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from whisper_mcp.models.convert import Ct2Binary
from whisper_mcp.models.derived import ensure_derived_folder

# Bump when the folder's layout changes, so old ones are rebuilt.
_FORMAT = 3
# Rows of the decoder's embedding kept, and of its layer's feed-forward inner
# size: generate() is never called on this model.
_KEPT_TOKENS = 8
_KEPT_FFN = 8
_LAYER = re.compile(r"(en|de)coder/layer_\d+/")  # a layer's, not the final layer_norm


def _stubbed(binary: Ct2Binary, side: str) -> dict[str, Any]:
    """``binary``'s variables with ``side`` ("encoder" or "decoder") cut to
    the smallest CTranslate2 still loads: its first layer, whose feed-forward
    keeps a few units, and its other variables (convolutions, positions,
    final norm); the other side untouched."""
    if binary.spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: its spec is {binary.spec!r}")
    first = f"{side}/layer_0/"
    if first + "self_attention/linear_0/weight" not in binary.variables:
        raise ValueError(f"the model has no {side} layer 0; it is not a CTranslate2 Whisper model")
    kept: dict[str, Any] = {}
    for name, array in binary.variables.items():
        if name.startswith(side + "/") and _LAYER.match(name) and not name.startswith(first):
            continue
        if name.startswith(first + "ffn/linear_0/"):  # (inner, d), its scale and bias (inner,)
            array = array[:_KEPT_FFN]
        elif name == first + "ffn/linear_1/weight":  # (d, inner)
            array = array[:, :_KEPT_FFN]
        kept[name] = array
    return kept


def encoder_only(binary: Ct2Binary) -> Ct2Binary:
    """``binary`` (a WhisperSpec) with its decoder a stub (``_stubbed``) of a
    few embedding rows. The encoder is untouched."""
    kept = _stubbed(binary, "decoder")
    kept["decoder/embeddings/weight"] = kept["decoder/embeddings/weight"][:_KEPT_TOKENS]
    # The output projection is the embedding (an alias in every converted Whisper).
    aliases = {a: t for a, t in binary.aliases.items() if t in kept and a not in kept}
    if "decoder/projection/weight" in kept:
        kept["decoder/projection/weight"] = kept["decoder/projection/weight"][:_KEPT_TOKENS]
    return Ct2Binary(binary.spec, binary.revision, kept, aliases)


def decoder_only(binary: Ct2Binary) -> Ct2Binary:
    """``binary`` (a WhisperSpec) with its encoder a stub (``_stubbed``), for
    the model that decodes while its encoder-only copy encodes: it never
    encodes itself. The decoder is untouched."""
    return Ct2Binary(binary.spec, binary.revision, _stubbed(binary, "encoder"), dict(binary.aliases))


def ensure_encoder_folder(folder: Path, cache_dir: Path) -> Path:
    """``cache_dir/<name>-<hash>``: the encoder-only copy of the CTranslate2
    Whisper folder ``folder``, built once and rebuilt when ``folder``'s files
    change (models.derived)."""
    return ensure_derived_folder(folder, cache_dir, encoder_only, _FORMAT)


def ensure_decoder_folder(folder: Path, cache_dir: Path) -> Path:
    """``cache_dir/<name>-<hash>``: the decoder-only copy (``decoder_only``) of
    ``folder``, built once and rebuilt when ``folder``'s files change."""
    return ensure_derived_folder(folder, cache_dir, decoder_only, _FORMAT)


__all__ = ["decoder_only", "encoder_only", "ensure_decoder_folder", "ensure_encoder_folder"]
