"""Folders derived from a CTranslate2 Whisper folder by rewriting its
model.bin (an encoder-only copy, models.encoder; int8 weights,
models.quantized; an identification-only copy, models.identifier): built
once under a cache folder, rebuilt when the source files change, published
whole (a crash or a racing process leaves the old one or none)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whisper_mcp.durable import building_dir
from whisper_mcp.models.convert import Ct2Binary, read_ct2_binary, source_fingerprint, write_ct2_binary

_FINGERPRINT = ".source.json"
_COPIED = ("config.json", "vocabulary.txt", "vocabulary.json", "tokenizer.json", "preprocessor_config.json")


def ensure_derived_folder(
    folder: Path,
    cache_dir: Path,
    rewrite: Callable[[Ct2Binary], Ct2Binary],
    format_version: int,
    files: Callable[[Path], None] | None = None,
) -> Path:
    """``cache_dir/<name>-<hash>``: ``folder`` with its model.bin rewritten by
    ``rewrite``, its other files copied, then changed by ``files(folder)``
    where given. ``format_version`` is the rewrite's own: bump it when what
    ``rewrite`` or ``files`` makes changes, so old folders are redone."""
    sources = [folder / "model.bin", *(folder / n for n in _COPIED if (folder / n).is_file())]
    fingerprint = source_fingerprint(format_version, sources)
    target = cache_dir / f"{folder.name}-{_path_key(folder)}"
    if _is_current(target, fingerprint):
        return target
    with building_dir(target, lambda: _is_current(target, fingerprint)) as tmp:
        binary = rewrite(read_ct2_binary([folder / "model.bin"]))
        with open(tmp / "model.bin", "wb") as out:
            write_ct2_binary(binary, out)
            out.flush()
            os.fsync(out.fileno())
        for path in sources[1:]:
            shutil.copyfile(path, tmp / path.name)
        if files is not None:
            files(tmp)
        (tmp / _FINGERPRINT).write_text(json.dumps(fingerprint), encoding="utf-8")
    return target


def _path_key(folder: Path) -> str:
    # Stable across processes (hash() of a str is salted per process).
    return hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()[:12]


def _is_current(target: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        stored = json.loads((target / _FINGERPRINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == fingerprint and (target / "model.bin").is_file()


__all__ = ["ensure_derived_folder"]
