"""When the batched decode itself fails (say, out of GPU memory for the whole
batch), the jobs run one by one instead of all failing. The failure is
injected; the model and audio are real."""

from __future__ import annotations

import pytest

from whisper_mcp.config import default_model_cache
from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.models.registry import ModelRegistry
from whisper_mcp.options import TranscribeOptions
from whisper_mcp.transcriber import Transcriber

from helpers import FIXTURES, words


@pytest.mark.slow  # the real model
def test_failed_batch_decode_falls_back_to_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import whisper_mcp.engines.openai as openai_backend  # torch: imported when this runs, not when collected

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(openai_backend, "decode_first_windows", out_of_memory)
    engine = Transcriber(ModelRegistry(default_model_cache(), engine="openai"), "cpu")
    items = [BatchItem(FIXTURES / "speech.wav"), BatchItem(FIXTURES / "short.wav")]
    outcomes = engine.transcribe_batch(items, engine.registry.resolve("tiny.en"), TranscribeOptions())
    assert all(isinstance(o, Transcription) for o in outcomes), outcomes
    assert {"meeting", "friday"} <= words(outcomes[0].text)  # type: ignore[union-attr]
    assert {"hello", "world"} <= words(outcomes[1].text)  # type: ignore[union-attr]
    assert engine.backend.batched_windows == 0  # type: ignore[attr-defined]
