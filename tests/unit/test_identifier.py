"""Identification-only model folders (models.identifier): the vocabulary cut
to the special tokens, padded back to its length, the embedding's rows and
the language ids renumbered to match."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whisper_mcp.models import identifier
from whisper_mcp.models.convert import Ct2Binary, read_ct2_binary, write_ct2_binary

SIZE = identifier.MULTILINGUAL_VOCABULARY


def vocabulary() -> list[str]:
    """Whisper's multilingual layout in brief: text tokens, an empty one, then
    the special tokens, three languages among them, then timestamps."""
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|fr|>", "<|translate|>",
                "<|transcribe|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    text = [f"t{i}" for i in range(SIZE - len(specials) - len(stamps) - 1)]
    return [*text, "", *specials, *stamps]


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    words = vocabulary()
    (folder / "vocabulary.txt").write_text("".join(f"{w}\n" for w in words), encoding="utf-8")
    ids = {w: i for i, w in enumerate(words)}
    config = {"lang_ids": [ids["<|en|>"], ids["<|de|>"], ids["<|fr|>"]], "suppress_ids": [1, ids["<|translate|>"]],
              "suppress_ids_begin": [220, ids["<|endoftext|>"]], "alignment_heads": [[1, 0]]}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    rows = np.arange(SIZE).astype(np.int8)[:, None].repeat(4, axis=1)  # row i holds i, wrapped to int8
    binary = Ct2Binary(
        "WhisperSpec", 3,
        {"decoder/embeddings/weight": rows, "decoder/embeddings/weight_scale": np.arange(SIZE, dtype=np.float32),
         "encoder/conv1/weight": np.ones((4, 2, 3), dtype=np.float32)},
        {"decoder/projection/weight": "decoder/embeddings/weight",
         "decoder/projection/weight_scale": "decoder/embeddings/weight_scale"},
    )  # fmt: skip
    with open(folder / "model.bin", "wb") as out:
        write_ct2_binary(binary, out)
    return folder


def test_only_the_special_tokens_are_kept_and_the_languages_renumbered(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    words = vocabulary()
    copy = identifier.ensure_identifier_folder(folder, tmp_path / "cache")
    kept = [w for w in words if w == "" or (w.startswith("<|") and not w[2].isdigit())]
    assert kept[0] == "" and len(kept) == 10
    new_words = identifier.read_vocabulary(copy)
    assert new_words[: len(kept)] == kept and len(new_words) == SIZE  # padded: still multilingual
    assert len(set(new_words)) == SIZE and identifier.is_multilingual(copy)
    config = json.loads((copy / "config.json").read_text())
    assert [new_words[i] for i in config["lang_ids"]] == ["<|en|>", "<|de|>", "<|fr|>"]
    assert [new_words[i] for i in config["suppress_ids"]] == ["<|translate|>"]  # a text token's is dropped
    assert config["alignment_heads"] == [[1, 0]]
    assert not (copy / "tokenizer.json").exists()
    binary = read_ct2_binary([copy / "model.bin"])
    old = [words.index(w) for w in kept]
    assert binary.variables["decoder/embeddings/weight"][:, 0].tolist() == [(i + 128) % 256 - 128 for i in old]
    assert binary.variables["decoder/embeddings/weight_scale"].tolist() == [float(i) for i in old]
    assert binary.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert binary.variables["encoder/conv1/weight"].shape == (4, 2, 3)
    assert identifier.ensure_identifier_folder(folder, tmp_path / "cache") == copy  # built once


def test_an_english_only_model_has_no_identifier(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    words = identifier.read_vocabulary(folder)
    (folder / "vocabulary.txt").write_text("".join(f"{w}\n" for w in words[: SIZE - 1]), encoding="utf-8")
    assert not identifier.is_multilingual(folder)
    with pytest.raises(ValueError, match="not a multilingual model"):
        identifier.ensure_identifier_folder(folder, tmp_path / "cache")
