"""Language routing with the real models: a recording sent with no options
comes back in its own language; English stays on tiny.en, word for word; a
named English-only model is never second-guessed but warned; and OpenAI's
whisper-1 transcribes and translates as OpenAI users expect."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from helpers import FIXTURES, ServerProcess, submit, wait_done, words

pytestmark = pytest.mark.e2e


def done(client: httpx.Client, name: str, **fields: str) -> dict:
    record = wait_done(client, submit(client, FIXTURES / name, cache="false", **fields)["job_id"], timeout=300)
    assert record["status"] == "completed", record
    return record


def test_spanish_with_no_options_comes_back_in_spanish(client: httpx.Client) -> None:
    record = done(client, "spanish.wav")
    assert (record["model"], record["language"]) == ("base", "es"), record
    assert record["language_probability"] > 0.5
    assert {"buenos", "días", "calor", "gracias"} <= words(record["transcript"]), record["transcript"]
    assert "warning" not in record


def test_english_stays_on_tiny_en_word_for_word(client: httpx.Client) -> None:
    routed = done(client, "speech.wav")
    named = done(client, "speech.wav", model="tiny.en")
    assert (routed["model"], routed["language"]) == ("tiny.en", "en"), routed
    assert routed["language_probability"] > 0.5
    assert routed["transcript"] == named["transcript"]
    assert routed["options"] == named["options"]  # routing is the service's choice, not shown as the client's


def test_a_named_english_only_model_is_warned_not_rerouted(client: httpx.Client) -> None:
    record = done(client, "spanish.wav", model="tiny.en")
    assert record["model"] == "tiny.en" and record["language"] == "es", record
    assert "Spanish" in record["warning"] and "English only" in record["warning"], record
    # The stored result says so too.
    result = client.get(f"/download/{record['job_id']}", params={"format": "json"}).json()
    assert result["warning"] == record["warning"]


def test_a_named_language_with_no_model_goes_to_the_multilingual_model(client: httpx.Client) -> None:
    record = done(client, "spanish.wav", language="es")
    assert record["model"] == "base" and record["language"] == "es", record
    assert "calor" in words(record["transcript"])


@pytest.fixture(scope="module")
def openai_client(server: ServerProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def test_whisper_1_transcribes_and_translates_as_openai_does(openai_client: OpenAI) -> None:
    with open(FIXTURES / "spanish.wav", "rb") as f:
        heard = openai_client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert heard.language == "spanish" and "calor" in words(heard.text), heard
    with open(FIXTURES / "spanish.wav", "rb") as f:
        translated = openai_client.audio.translations.create(model="whisper-1", file=f)
    assert {"good", "morning", "hot"} <= words(translated.text), translated.text
    described = {m.id: getattr(m, "description", "") for m in openai_client.models.list()}
    assert "tiny.en for English" in described["whisper-1"] and "base" in described["whisper-1"], described


def test_prepare_model_readies_the_routing_model_too(tmp_path: Path) -> None:
    """``whisper-mcp prepare-model`` (make model, the Docker image) builds what
    the first job would: the start-up model's copies, and the identification
    copy of the model language routing identifies with, so no job converts
    weights (base's int8 conversion peaks near 600 MiB)."""
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "prepare-model", "--model", "tiny.en", "--model-cache", str(cache)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "base is ready to identify languages" in done.stdout
    for kind in ("ct2-int8", "ct2-encoder", "ct2-decoder", "ct2-identifier"):
        assert any((folder / "model.bin").is_file() for folder in (cache / kind).iterdir()), kind
    assert [folder.name.split("-")[0] for folder in (cache / "ct2-identifier").iterdir()] == ["base"]
