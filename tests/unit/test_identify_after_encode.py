"""Language routing on a batch: identification starts once the batch's
windows are encoded (beside the one-thread decode, not the every-core
encoder); a lone job is identified at once, as before. Over a fake backend."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from whisper_mcp.engines.base import BatchItem, Transcription
from whisper_mcp.options import TranscribeOptions

ROUTE = TranscribeOptions(identify_with="base", reroute=True)


class FakePool:
    @contextlib.contextmanager
    def use(self, info: object) -> Iterator[object]:
        yield object()


class FakeBackend:
    batching = True
    tells_encoded = True

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def transcribe_batch(self, loaded: object, items: Sequence[BatchItem], options: Any) -> list[Transcription]:
        self.events.append("encoding")
        time.sleep(0.05)  # an identification that did not wait would come in here
        for item in items:
            assert item.on_encoded is not None
            item.on_encoded()
        self.events.append("encoded")
        return [self._decoded(item) for item in items]

    def transcribe(self, loaded: object, audio: object, options: Any, on_progress: Any, *rest: Any) -> Transcription:
        return self._decoded(BatchItem(np.zeros(16000, np.float32), on_progress=on_progress))

    def _decoded(self, item: BatchItem) -> Transcription:
        if item.on_progress is not None:
            item.on_progress(1.0)  # held until the language is known
        return Transcription("hello", "en", 1.0)


@pytest.fixture
def engine(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("faster_whisper")
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.transcriber import Transcriber

    engine = Transcriber(ModelRegistry(tmp_path, engine="ctranslate2"), "cpu")
    events: list[str] = []
    engine.backend = FakeBackend(events)  # type: ignore[assignment]
    monkeypatch.setattr(engine, "pool", FakePool())

    def identifier(model: object) -> Any:
        def identify(items: Sequence[BatchItem]) -> list[tuple[str, float]]:
            events.append("identify")
            return [("en", 0.9)] * len(items)

        return identify

    monkeypatch.setattr(engine, "_identifier", identifier)
    engine.events = events
    return engine


def test_a_batch_is_identified_after_its_windows_are_encoded(engine: Any) -> None:
    items = [BatchItem(np.zeros(16000, np.float32)) for _ in range(3)]
    outcomes = engine.transcribe_batch(items, engine.registry.resolve("tiny.en"), ROUTE)
    assert [o.language for o in outcomes] == ["en"] * 3
    assert engine.events == ["encoding", "encoded", "identify"]


def test_a_lone_job_is_identified_at_once(engine: Any) -> None:
    outcome = engine.transcribe_batch(
        [BatchItem(np.zeros(16000, np.float32))], engine.registry.resolve("tiny.en"), ROUTE
    )
    assert outcome[0].language == "en" and engine.events == ["identify"]
