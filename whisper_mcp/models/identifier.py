"""Identification-only CTranslate2 Whisper folders: a multilingual model
whose vocabulary is cut to its special tokens.

Language routing holds the multilingual model (base) to identify each job's
language, one decoder step from ``<|startoftranscript|>`` scored over the
language tokens; while the speech is English it never decodes text. Most of
an int8 decoder's memory beyond its layers is the embedding (base: 51865
rows of 512), which is also the output layer. A copy whose embedding keeps
only the special tokens' rows (108, timestamps left out) scores the languages
bit for bit as the whole model does (every committed clip, 10 s and 30 s
windows), and base loads at 53 MiB instead of 82 (bench/ section memory).

The kept tokens stay in their order and come first; the vocabulary is then
padded with unused names to its old length, so CTranslate2 still sees a
multilingual model of the same languages (its tests look at the vocabulary's
size, or at its empty token, which is kept). The language ids in config.json
are renumbered to match. Such a copy can only identify: ``generate`` would
see a vocabulary of special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whisper_mcp.models.convert import Ct2Binary
from whisper_mcp.models.derived import ensure_derived_folder

# Bump when the folder's layout changes, so old ones are rebuilt.
_FORMAT = 1
# openai-whisper's test for a multilingual vocabulary (ModelDimensions.n_vocab).
MULTILINGUAL_VOCABULARY = 51865


def read_vocabulary(folder: Path) -> list[str]:
    """A CTranslate2 model folder's tokens in id order (vocabulary.json or .txt)."""
    if (folder / "vocabulary.json").is_file():
        return [str(t) for t in json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))]
    text = (folder / "vocabulary.txt").read_text(encoding="utf-8")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def is_multilingual(folder: Path) -> bool:
    """Whether ``folder`` (a CTranslate2 Whisper model) has a multilingual vocabulary."""
    try:
        return len(read_vocabulary(folder)) >= MULTILINGUAL_VOCABULARY
    except (OSError, ValueError):
        return False


def kept_tokens(vocabulary: list[str]) -> list[int]:
    """The ids an identification needs: the special tokens ``<|...|>`` but
    timestamps, and the empty token (CTranslate2's mark of a multilingual
    model), in order."""

    def special(token: str) -> bool:
        if not (token.startswith("<|") and token.endswith("|>")):
            return token == ""
        inner = token[2:-2]
        return not inner.replace(".", "", 1).isdigit()  # <|0.00|> ... <|30.00|>

    return [i for i, token in enumerate(vocabulary) if special(token)]


def cut_embedding(binary: Ct2Binary, kept: list[int]) -> Ct2Binary:
    """``binary`` whose embedding (and output layer, and their int8 scales)
    keeps only the rows ``kept``, in that order."""
    if binary.spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: its spec is {binary.spec!r}")
    rows = {f"decoder/{part}/{name}" for part in ("embeddings", "projection") for name in ("weight", "weight_scale")}
    variables: dict[str, Any] = {
        name: array[kept] if name in rows else array for name, array in binary.variables.items()
    }
    if "decoder/embeddings/weight" not in variables:
        raise ValueError("the model has no decoder embedding; it is not a CTranslate2 Whisper model")
    return Ct2Binary(binary.spec, binary.revision, variables, dict(binary.aliases))


def ensure_identifier_folder(folder: Path, cache_dir: Path) -> Path:
    """``cache_dir/<name>-<hash>``: the identification-only copy of the
    multilingual CTranslate2 Whisper folder ``folder``, built once and rebuilt
    when ``folder``'s files change (models.derived). ValueError where
    ``folder`` is not multilingual."""
    vocabulary = read_vocabulary(folder)
    if len(vocabulary) < MULTILINGUAL_VOCABULARY:
        raise ValueError(f"{folder.name} is not a multilingual model: {len(vocabulary)} tokens")
    kept = kept_tokens(vocabulary)
    renumbered = {old: new for new, old in enumerate(kept)}

    def files(target: Path) -> None:
        tokens = [vocabulary[i] for i in kept]
        tokens += [f"<|unused:{i}|>" for i in range(len(vocabulary) - len(tokens))]
        (target / "vocabulary.json").unlink(missing_ok=True)
        (target / "vocabulary.txt").write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
        (target / "tokenizer.json").unlink(missing_ok=True)  # the whole model's: never read here
        config_path = target / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        config["lang_ids"] = [renumbered[i] for i in config.get("lang_ids", []) if i in renumbered]
        for key in ("suppress_ids", "suppress_ids_begin"):  # generate()'s, which this copy never runs
            config[key] = [renumbered[i] for i in config.get(key, []) if i in renumbered]
        config_path.write_text(json.dumps(config), encoding="utf-8")

    return ensure_derived_folder(folder, cache_dir, lambda b: cut_embedding(b, kept), _FORMAT, files)


__all__ = ["ensure_identifier_folder", "is_multilingual", "read_vocabulary"]
