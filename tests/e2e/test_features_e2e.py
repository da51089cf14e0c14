"""Models loaded on demand and evicted under a memory budget, with the real
engine and models behind the real routes (in process: the budget is a setting,
not a property of the server process). Every other feature (formats, options,
cache, priorities, cancel, the job list, MCP resources) is tested over a fake
engine in tests/unit/test_features.py; what the real models make of the
options, in tests/e2e/test_engines_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.config import Settings
from whisper_mcp.server.app import build_engine

from helpers import FIXTURES, InProcessServer, submit, wait_done, words

pytestmark = pytest.mark.e2e


@pytest.fixture
def budget_server(tmp_path: Path) -> Iterator[InProcessServer]:
    # Room for tiny.en (pinned, ~150 MB) only: another model loads over the
    # budget when nothing can go, and is the first to go when a third needs room.
    settings = {"model_memory_mb": 200, "device": "cpu"}
    engine = build_engine(Settings.from_env({}, storage=tmp_path / "storage", engine="openai", **settings))
    with InProcessServer.start(tmp_path / "storage", engine, **settings) as srv:  # type: ignore[arg-type]
        yield srv


def test_models_load_lazily_and_are_evicted_under_budget(budget_server: InProcessServer) -> None:
    with budget_server.client() as client:
        assert client.get("/health").json()["loaded_models"] == ["tiny.en"]
        job = wait_done(client, submit(client, FIXTURES / "short.wav", model="base")["job_id"])
        assert job["status"] == "completed" and {"hello", "world"} <= words(job["transcript"])
        assert set(client.get("/health").json()["loaded_models"]) == {"tiny.en", "base"}
        # The speaker diarizer is a third model in the same pool: base goes,
        # tiny.en (the start-up model) stays.
        job = wait_done(client, submit(client, FIXTURES / "speech.wav", diarize="true")["job_id"])
        assert job["status"] == "completed", job
        assert {"meeting", "friday"} <= words(job["transcript"])
        models = client.get("/models").json()
        assert models["unloads"] >= 1
        loaded = {m["name"] for m in models["models"] if m["loaded"]}
        assert loaded == {"tiny.en"} and models["diarizer"]["loaded"]
        assert set(client.get("/health").json()["loaded_models"]) == {"tiny.en", models["diarizer"]["name"]}
        metrics = client.get("/metrics").text
        assert 'whisper_mcp_model_loads_total{event="unload"}' in metrics
        assert "whisper_mcp_models_loaded 2.0" in metrics
