"""The multilingual fixtures (tests/fixtures/languages), sent with no model
chosen: language routing names each one's language and decodes it at the
multilingual base model's accuracy, through /v1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from whisper_mcp.languages import LANGUAGES

from helpers import FIXTURES, ServerProcess
from openai_schema import check

pytestmark = pytest.mark.e2e

SPOKEN = sorted((FIXTURES / "languages").glob("*.opus"))


def test_there_are_six_languages_each_with_its_text() -> None:
    assert {p.stem for p in SPOKEN} >= {"de", "fr", "es", "it", "pt", "nl"}
    assert all(p.with_suffix(".txt").read_text().strip() for p in SPOKEN)


def transcribe(server: ServerProcess, audio: Path, model: str) -> dict:
    with open(audio, "rb") as f:
        response = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": model, "response_format": "verbose_json"},
            files={"file": (audio.name, f)},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    check(body, "CreateTranscriptionResponseVerboseJson")
    return body


@pytest.mark.parametrize("audio", SPOKEN, ids=lambda p: p.stem)
def test_routing_hears_each_language_as_base_does(server: ServerProcess, audio: Path) -> None:
    """whisper-1 (no model chosen: language routing) identifies the language and
    decodes it with the multilingual model: the same text as naming base."""
    routed, named = transcribe(server, audio, "whisper-1"), transcribe(server, audio, "base")
    assert routed["language"] == named["language"] == LANGUAGES[audio.stem], (routed["text"], named["text"])
    assert routed["text"] == named["text"]
