"""Which model and options a job gets under language routing, decided at
submission (in process, over the fake engine); the real models' routing is
tested in tests/e2e/test_language_routing_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisper_mcp.options import TranscribeOptions

from helpers import FIXTURES, InProcessServer, submit, wait_done

ROUTE = TranscribeOptions(identify_with="base", reroute=True)
CHECK = TranscribeOptions(identify_with="base", reroute=False)


@pytest.mark.parametrize(
    ("settings", "fields", "expected"),
    [
        ({}, {}, ("tiny.en", ROUTE)),
        ({}, {"model": "tiny.en"}, ("tiny.en", CHECK)),  # named: warned, never rerouted
        ({}, {"language": "de"}, ("base", TranscribeOptions(language="de"))),
        ({}, {"language": "en"}, ("tiny.en", TranscribeOptions(language="en"))),
        ({}, {"task": "translate"}, ("base", TranscribeOptions(task="translate"))),
        ({}, {"model": "base"}, ("base", TranscribeOptions())),  # multilingual: detects by itself
        ({"language_routing": False}, {}, ("tiny.en", CHECK)),
        ({"multilingual_model": ""}, {}, ("tiny.en", TranscribeOptions())),
        ({"model": "base"}, {}, ("base", TranscribeOptions())),
    ],
)
def test_routing_decides_model_and_options(
    tmp_path: Path, settings: dict[str, object], fields: dict[str, str], expected: tuple[str, TranscribeOptions]
) -> None:
    with InProcessServer.start(tmp_path / "storage", **settings) as srv, srv.client() as client:
        job = submit(client, FIXTURES / "short.wav", **fields)
        assert wait_done(client, job["job_id"])["status"] == "completed"
        assert srv.engine.calls[-1] == expected
        # Routing is the service's choice: not listed among the client's options.
        assert "identify_with" not in job["options"] and "reroute" not in job["options"]


def test_without_routing_a_translation_needs_a_multilingual_model(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage", language_routing=False) as srv, srv.client() as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            refused = client.post("/transcribe", files={"file": f}, data={"task": "translate"})
        assert refused.status_code == 400 and "English-only" in refused.json()["error"]["message"]


def test_v1_models_say_what_whisper_1_means(fake_client) -> None:  # type: ignore[no-untyped-def]
    models = {m["id"]: m["description"] for m in fake_client.get("/v1/models").json()["data"]}
    assert models["whisper-1"].startswith("tiny.en for English; other languages and translations: base")
    assert models["tiny.en"] == "tiny.en (English only)"
    assert models["base"].startswith("base (multilingual")
