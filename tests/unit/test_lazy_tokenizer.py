"""A ctranslate2 model's tokenizer is read when first used (a model that only
identifies languages never reads it)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest


def test_the_tokenizer_is_read_on_first_use(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("faster_whisper")
    from whisper_mcp.engines.ctranslate2 import LazyTokenizer

    path = tmp_path / "tokenizer.json"
    tokenizers.Tokenizer(tokenizers.models.WordLevel({"hello": 0, "<unk>": 1}, unk_token="<unk>")).save(str(path))
    lazy = LazyTokenizer(path)
    assert lazy._tokenizer is None  # nothing read yet
    shared = copy.copy(lazy)  # a shallow copy of the model (batched decoding) keeps working
    assert shared.token_to_id("hello") == 0
    assert lazy.token_to_id("<unk>") == 1
    assert lazy.loaded() is lazy.loaded()
    with pytest.raises(AttributeError):
        _ = lazy._missing
