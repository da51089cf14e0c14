"""The multilingual fixtures (tests/fixtures/languages) are usable: the real
multilingual base model names each one's language, through /v1."""

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


@pytest.mark.parametrize("audio", SPOKEN, ids=lambda p: p.stem)
def test_base_names_the_language(server: ServerProcess, audio: Path) -> None:
    with open(audio, "rb") as f:
        response = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "base", "response_format": "verbose_json"},
            files={"file": (audio.name, f)},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    check(body, "CreateTranscriptionResponseVerboseJson")
    assert body["language"] == LANGUAGES[audio.stem], body["text"]
