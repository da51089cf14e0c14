"""The client commands (whisper_mcp.client.cli) against a real server with the
real model: ``python -m whisper_mcp.client.cli`` as a user runs it. Options,
output, errors and exit codes are tested in process over a fake engine:
tests/unit/test_client.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, ROOT, ServerProcess, words

pytestmark = pytest.mark.e2e

SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
SHORT_WORDS = {"hello", "world", "testing"}


def run_module(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whisper_mcp.client.cli", *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SRT_BLOCK = re.compile(
    r"(\d+)\n(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})\n(.+?)(?:\n\n|\n?$)", re.S
)


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue; asserts the whole file is well-formed SRT."""
    cues = []
    position = 0
    for match in SRT_BLOCK.finditer(text):
        assert match.start() == position, f"garbage before cue at {position}: {text[position : match.start()]!r}"
        position = match.end()
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups()[1:9])
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert int(match.group(1)) == len(cues) + 1, "cues must be numbered 1, 2, 3, ..."
        assert end >= start
        cues.append((start, end, match.group(10).strip()))
    assert position == len(text), f"trailing garbage: {text[position:]!r}"
    assert cues, "no cues"
    return cues


def test_transcribe_module_srt_next_to_file(server: ServerProcess, tmp_path: Path) -> None:
    """`python -m whisper_mcp.client.cli`: URL from the environment, two files,
    subtitles written next to each, what the model heard in them."""
    speech = tmp_path / "meeting notes.wav"
    speech.write_bytes((FIXTURES / "speech.wav").read_bytes())
    short = tmp_path / "short.wav"
    short.write_bytes((FIXTURES / "short.wav").read_bytes())
    result = run_module(
        "transcribe", str(speech), str(short), "--format", "srt", "--no-cache", env={"WHISPER_MCP_URL": server.url}
    )
    assert result.returncode == 0, result.stderr
    targets = [tmp_path / "meeting notes.srt", tmp_path / "short.srt"]
    assert result.stdout.splitlines() == [str(t) for t in targets]
    cues = parse_srt(targets[0].read_text(encoding="utf-8"))
    assert cues[-1][1] <= 9.0  # speech.wav is ~7.6 s
    assert len(SPEECH_WORDS & words(" ".join(text for _, _, text in cues))) >= 6, cues
    assert SHORT_WORDS <= words(" ".join(text for _, _, text in parse_srt(targets[1].read_text(encoding="utf-8"))))
    # Not a terminal: status lines, one per change, no carriage returns.
    for audio in (speech, short):
        assert any(line.startswith(f"{audio}") and ": completed (" in line for line in result.stderr.splitlines()), (
            result.stderr
        )
    assert "\r" not in result.stderr and "error" not in result.stderr
