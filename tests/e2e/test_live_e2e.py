"""Live transcription from the user's side, against the real server and model
(one server, with a token, for the module): ``whisper-mcp live`` on a
recording and on raw PCM from standard input, and the dashboard's Live panel
in a real Chromium whose microphone plays a recording. Arguments, pacing and
the protocol's edge cases are tested in process in tests/unit/test_live_client.py
and tests/unit/test_dashboard_live.py."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whisper_mcp.client import live as live_client

from helpers import CHROMIUM, CHROMIUM_ARGS, FIXTURES, ROOT, ServerProcess, fake_microphone, heard_live, words

pytestmark = pytest.mark.e2e

TOKEN = "live-e2e-token"
SPEECH_WORDS = {"transcription", "services", "model", "meeting", "morning", "report"}
SHORT_WORDS = {"hello", "world", "testing"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("live")
    srv = ServerProcess(root / "storage", root / "server.log", "--token", TOKEN)
    srv.start(headers={"Authorization": f"Bearer {TOKEN}"})
    yield srv
    srv.stop()


def live(server: ServerProcess, *argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "live", *argv],
        cwd=ROOT,
        env={**os.environ, "WHISPER_MCP_URL": server.url, "WHISPER_MCP_TOKEN": TOKEN},
        input=stdin,
        capture_output=True,
        timeout=180,
    )


def test_live_prints_each_utterance_of_a_recording(server: ServerProcess) -> None:
    done = live(server, str(FIXTURES / "speech.wav"), "--speed", "4", "--language", "en")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert heard_live(SPEECH_WORDS, out), out
    assert out.endswith("\n") and "\r" not in out  # not a terminal: completed lines only


def pcm24k(path: Path) -> bytes:
    """A recording as raw PCM16, mono, 24 kHz: what a microphone pipe gives."""
    return b"".join(live_client.file_chunks(path))


def test_live_reads_raw_pcm_from_standard_input_without_vad(server: ServerProcess) -> None:
    done = live(server, "-", "--speed", "0", "--no-vad", stdin=pcm24k(FIXTURES / "short.wav"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1 and SHORT_WORDS <= words(lines[0]), lines  # one utterance: the whole stream


def block(doc: str, heading: str, language: str) -> str:
    """The first ``language`` code block under ``heading`` in docs/``doc``."""
    section = (ROOT / "docs" / doc).read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_client_docs_live_examples_run_as_written(server: ServerProcess, tmp_path: Path) -> None:
    """docs/client.md's examples, a recording as talk.wav and the microphone
    as a pipe of raw PCM (what the arecord line makes)."""
    shutil.copy(FIXTURES / "short.wav", tmp_path / "talk.wav")
    microphone = pcm24k(FIXTURES / "short.wav")
    lines = [line.split("  #")[0].strip() for line in block("client.md", "Live transcription", "sh").splitlines()]
    assert len(lines) == 3
    for line in lines:
        command = shlex.split(line.split("|")[-1])
        assert command[:2] == ["whisper-mcp", "live"], line
        done = subprocess.run(
            [sys.executable, "-m", "whisper_mcp", *command[1:]],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "WHISPER_MCP_URL": server.url, "WHISPER_MCP_TOKEN": TOKEN},
            input=microphone if "|" in line else None,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, (line, done.stderr)
        assert SHORT_WORDS <= words(done.stdout.decode()), (line, done.stdout)


def client_secret(server: ServerProcess) -> dict[str, Any]:
    """docs/realtime.md's curl command, run as written (against this server)."""
    command = block("realtime.md", "From a browser: client secrets", "sh").replace("http://127.0.0.1:8765", server.url)
    done = subprocess.run(
        ["bash", "-c", command], env={**os.environ, "WHISPER_MCP_TOKEN": TOKEN}, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    made: dict[str, Any] = json.loads(done.stdout)
    return made


def test_live_with_a_wrong_token_exits_4(server: ServerProcess) -> None:
    done = live(server, str(FIXTURES / "short.wav"), "--token", "wrong")
    assert done.returncode == 4 and b"bearer token" in done.stderr


def test_the_dashboards_microphone_is_transcribed_live(server: ServerProcess, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    # The microphone plays the recording over and over: with a pause after
    # it, as a speaker makes one, so server VAD ends each turn.
    microphone = tmp_path / "microphone.wav"
    with wave.open(str(FIXTURES / "speech.wav")) as source, wave.open(str(microphone), "wb") as out:
        out.setparams(source.getparams())
        out.writeframes(source.readframes(source.getnframes()))
        out.writeframes(b"\0" * source.getsampwidth() * source.getframerate() * 2)

    args = [*CHROMIUM_ARGS, *fake_microphone(microphone)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page: Any = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("websocket", lambda socket: problems.append(socket.url) if TOKEN in socket.url else None)
            page.goto(server.url + "/")
            page.get_by_label("Token", exact=True).fill(TOKEN)
            page.get_by_role("button", name="Use token").click()
            expect(page.locator("#h-loaded")).to_have_text("yes")
            page.get_by_label("Live language", exact=True).fill("en")
            page.get_by_role("button", name="Start microphone").click()
            expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=20_000)
            final = page.locator("#live-text p.final")
            # The fake microphone plays the recording over and over, from
            # wherever it was when the panel started: wait until every part of
            # it has been heard and completed on the page.
            deadline = time.monotonic() + 120
            while not heard_live(SPEECH_WORDS, heard := " ".join(final.all_inner_texts())):
                assert time.monotonic() < deadline, heard
                page.wait_for_timeout(250)
            page.get_by_role("button", name="Stop").click()
            expect(page.get_by_role("button", name="Start microphone")).to_be_enabled(timeout=30_000)

            # docs/realtime.md's page code, with a secret from its curl command: the socket opens.
            snippet = block("realtime.md", "From a browser: client secrets", "js").replace(
                "ws://127.0.0.1:8765", server.url.replace("http://", "ws://")
            )
            first = page.evaluate(
                "(secret) => new Promise((resolve, reject) => {" + snippet + "\n"
                "socket.addEventListener('message', (e) => resolve(JSON.parse(e.data).type), { once: true });"
                "socket.addEventListener('error', () => reject(new Error('the socket failed')));"
                "})",
                client_secret(server),
            )
            assert first == "session.created"
            assert not problems, problems
        finally:
            browser.close()
