"""Live transcription from the user's side, against the real server and model
(one server, with a token, for the module): ``whisper-mcp live`` on a
recording and on raw PCM from standard input, and the dashboard's Live panel
in a real Chromium whose microphone plays a recording. Arguments, pacing and
the protocol's edge cases are tested in process in tests/unit/test_live_client.py
and tests/unit/test_dashboard_live.py."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FIXTURES, ROOT, ServerProcess, words

pytestmark = pytest.mark.e2e

TOKEN = "live-e2e-token"
SPEECH_WORDS = {"transcription", "services", "model", "meeting", "morning", "report"}
SHORT_WORDS = {"hello", "world", "testing"}
CHROMIUM = Path("/usr/bin/chromium")


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
    assert SPEECH_WORDS <= words(out), out
    assert out.endswith("\n") and "\r" not in out  # not a terminal: completed lines only


def test_live_reads_raw_pcm_from_standard_input_without_vad(server: ServerProcess) -> None:
    import av

    pcm = bytearray()
    with av.open(str(FIXTURES / "short.wav")) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pcm += out.to_ndarray().tobytes()
    done = live(server, "-", "--speed", "0", "--no-vad", stdin=bytes(pcm))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1 and SHORT_WORDS <= words(lines[0]), lines  # one utterance: the whole stream


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

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    ]
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
            # The recording's last sentence, heard and completed on the page.
            expect(final.filter(has_text="Friday")).not_to_have_count(0, timeout=90_000)
            page.get_by_role("button", name="Stop").click()
            expect(page.get_by_role("button", name="Start microphone")).to_be_enabled(timeout=30_000)
            heard = words(" ".join(final.all_inner_texts()))
            assert SPEECH_WORDS <= heard, heard
            assert not problems, problems
        finally:
            browser.close()
