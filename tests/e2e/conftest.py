"""Fixtures the in-process e2e tests share: real engines on the prepared model cache."""

from __future__ import annotations

import pytest

from whisper_mcp.config import default_model_cache
from whisper_mcp.models.registry import ModelRegistry
from whisper_mcp.transcriber import Transcriber

from helpers import Engines


@pytest.fixture(scope="module")
def engines() -> Engines:
    """``engines(kind)``: a CPU engine of that kind (openai, ctranslate2), one
    per kind for the module, so each model loads once."""
    made: dict[str, Transcriber] = {}

    def engine(kind: str) -> Transcriber:
        if kind not in made:
            made[kind] = Transcriber(ModelRegistry(default_model_cache(), engine=kind), "cpu", engine=kind)
        return made[kind]

    return engine
