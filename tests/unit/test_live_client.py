"""``whisper-mcp live`` in process: its arguments, audio and pacing, and the
protocol against a fake realtime server (a real WebSocket on loopback that
answers as OpenAI's Realtime transcription does). The real command against
the real service: tests/e2e/test_live_e2e.py."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from whisper_mcp.client import live
from whisper_mcp.client.cli import add_client_commands, run_client_command
from whisper_mcp.engines.audio import probe_audio

from helpers import FIXTURES, ROOT

TOKEN = "live-token"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    return parser.parse_args(argv)


# -- arguments ---------------------------------------------------------------------


def test_options_become_one_session_update() -> None:
    args = parse(["live", "x.wav", "--model", "base", "--language", "de", "--prompt", "Grüße", "--speed", "2"])
    assert args.speed == 2.0 and args.vad is True
    assert live.session_update(args) == {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "turn_detection": {"type": "server_vad"},
                    "transcription": {"model": "base", "language": "de", "prompt": "Grüße"},
                }
            },
        },
    }
    plain = live.session_update(parse(["live", "-", "--no-vad"]))
    assert plain["session"]["audio"]["input"]["turn_detection"] is None
    assert "transcription" not in plain["session"]["audio"]["input"]


def test_bad_arguments_exit_2_before_connecting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_client_command(parse(["live", str(tmp_path / "missing.wav"), "--url", "http://127.0.0.1:9"])) == 2
    assert "missing.wav: no such file" in capsys.readouterr().err
    assert run_client_command(parse(["live", "-", "--speed", "-1", "--url", "http://127.0.0.1:9"])) == 2
    assert "--speed -1.0: give 0" in capsys.readouterr().err
    assert run_client_command(parse(["live", str(tmp_path), "--url", "http://127.0.0.1:9"])) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/realtime?intent=transcription"),
        ("https://stt.example/", "wss://stt.example/v1/realtime?intent=transcription"),
        ("https://example.org/whisper", "wss://example.org/whisper/v1/realtime?intent=transcription"),
    ],
)
def test_socket_url(base: str, url: str) -> None:
    assert live.socket_url(base) == url


def test_a_url_without_http_is_refused() -> None:
    with pytest.raises(live.LiveError, match="http:// or https://"):
        live.socket_url("127.0.0.1:8765")


# -- audio and pacing ----------------------------------------------------------------


def test_a_file_is_decoded_to_24k_mono_pcm16_in_tenths() -> None:
    chunks = list(live.file_chunks(FIXTURES / "speech_stereo_44k.wav"))
    assert {len(c) for c in chunks[:-1]} == {4800} and 0 < len(chunks[-1]) <= 4800
    seconds = sum(len(c) for c in chunks) / 48000
    assert seconds == pytest.approx(probe_audio(FIXTURES / "speech_stereo_44k.wav").duration, abs=0.05)


def test_a_file_that_is_not_audio_is_a_usage_error() -> None:
    with pytest.raises(live.LiveError, match="cannot be decoded") as raised:
        list(live.file_chunks(FIXTURES / "not_audio.bin"))
    assert raised.value.exit_code == 2


def test_standard_input_is_cut_in_tenths_and_a_stray_byte_dropped() -> None:
    chunks = list(live.stream_chunks(io.BytesIO(b"\x01" * (4800 * 2 + 101))))
    assert [len(c) for c in chunks] == [4800, 4800, 100]


def pacing(speed: float, sizes: list[int]) -> list[float]:
    """When each chunk went, by a clock that moves only while pacing sleeps."""
    now = [100.0]
    sent = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def run() -> None:
        async for _ in live.paced([b"\0" * n for n in sizes], speed, clock=lambda: now[0], sleep=sleep):
            sent.append(round(now[0] - 100.0, 6))

    asyncio.run(run())
    return sent


def test_real_time_pace_and_faster() -> None:
    tenth = 4800  # 0.1 s of PCM16 at 24 kHz
    assert pacing(1, [tenth] * 4) == [0.0, 0.1, 0.2, 0.3]
    assert pacing(2, [tenth] * 4) == [0.0, 0.05, 0.1, 0.15]
    assert pacing(1, [tenth * 10, tenth]) == [0.0, 1.0]
    assert pacing(0, [tenth] * 4) == [0.0] * 4


# -- against a fake realtime server ------------------------------------------------------------


class FakeRealtime:
    """Speaks the server's side: each commit (server VAD's, every 10 appends,
    or the client's) becomes an item with two deltas and a completed text."""

    def __init__(self, *, refuse: int | None = None, fail_items: bool = False, error: dict | None = None) -> None:
        self.refuse = refuse
        self.fail_items = fail_items
        self.error = error
        self.received: list[dict[str, Any]] = []
        self.headers: Headers | None = None
        self.path = ""

    def process_request(self, connection: ServerConnection, request: Any) -> Response | None:
        self.headers = request.headers
        self.path = request.path
        if self.refuse:
            body = json.dumps({"error": {"message": "Missing or wrong credential", "type": "x"}}).encode()
            return connection.respond(self.refuse, body.decode())
        return None

    async def handler(self, socket: ServerConnection) -> None:
        appended = 0
        items = 0

        async def commit() -> None:
            nonlocal items
            items += 1
            item = f"item_{items}"
            await socket.send(json.dumps({"type": "input_audio_buffer.committed", "item_id": item}))
            if self.fail_items:
                event = {"type": "conversation.item.input_audio_transcription.failed", "item_id": item}
                await socket.send(json.dumps({**event, "error": {"message": "model fell over"}}))
                return
            for word in (f"utterance {items}", " so far"):
                event = {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "delta": word}
                await socket.send(json.dumps(event))
            event = {"type": "conversation.item.input_audio_transcription.completed", "item_id": item}
            await socket.send(json.dumps({**event, "transcript": f"Utterance {items} done."}))

        await socket.send(json.dumps({"type": "session.created", "session": {"type": "transcription"}}))
        async for message in socket:
            event = json.loads(message)
            self.received.append(event)
            if self.error:
                await socket.send(json.dumps({"type": "error", "error": self.error}))
            elif event["type"] == "input_audio_buffer.append":
                appended += 1
                if appended % 10 == 0:
                    await commit()
            elif event["type"] == "input_audio_buffer.clear":
                await socket.send(json.dumps({"type": "input_audio_buffer.cleared"}))
            elif event["type"] == "input_audio_buffer.commit":
                if appended % 10 == 0:
                    error = {"code": "input_audio_buffer_commit_empty", "message": "buffer empty"}
                    await socket.send(json.dumps({"type": "error", "error": error}))
                else:
                    await commit()


@pytest.fixture
def fake() -> Iterator[Callable[..., tuple[FakeRealtime, str]]]:
    """Start a FakeRealtime on a loopback port (its own loop, on a thread)."""
    stops: list[Callable[[], None]] = []

    def start(**kwargs: Any) -> tuple[FakeRealtime, str]:
        server = FakeRealtime(**kwargs)
        ready = threading.Event()
        holder: dict[str, Any] = {}

        async def main() -> None:
            async with serve(server.handler, "127.0.0.1", 0, process_request=server.process_request) as running:
                holder["port"] = running.sockets[0].getsockname()[1]
                holder["loop"], holder["stop"] = asyncio.get_running_loop(), asyncio.Event()
                ready.set()
                await holder["stop"].wait()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(5)
        stops.append(lambda: (holder["loop"].call_soon_threadsafe(holder["stop"].set), thread.join(5)))
        return server, f"http://127.0.0.1:{holder['port']}"

    yield start
    for stop in stops:
        stop()


def run_live(url: str, *argv: str, stdin: bytes | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return run_client_command(parse(["live", *argv, "--url", url, "--token", TOKEN]))


def test_a_file_streams_and_each_utterance_prints_once(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server, url = fake()
    assert run_live(url, str(FIXTURES / "short.wav"), "--speed", "0", "--language", "en") == 0
    out = capsys.readouterr().out
    # short.wav is 2.4 s: two server VAD commits of 10 tenths, and the rest committed at the end.
    assert out == "Utterance 1 done.\nUtterance 2 done.\nUtterance 3 done.\n"
    assert server.headers is not None and server.headers["Authorization"] == f"Bearer {TOKEN}"
    kinds = [e["type"] for e in server.received]
    assert kinds[0] == "session.update" and kinds[-2:] == ["input_audio_buffer.commit", "input_audio_buffer.clear"]
    assert set(kinds[1:-2]) == {"input_audio_buffer.append"} and len(kinds) == 3 + 24
    assert server.received[0]["session"]["audio"]["input"]["transcription"] == {"language": "en"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in server.received[1:-2])
    assert len(audio) == pytest.approx(2.4 * 48000, abs=960)


def test_keep_audio_asks_the_service_to_keep_the_sessions_audio(
    fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = fake()
    assert run_live(url, "-", "--speed", "0", stdin=b"\0" * 4800, monkeypatch=monkeypatch) == 0
    assert server.path == "/v1/realtime?intent=transcription"
    assert run_live(url, "-", "--speed", "0", "--keep-audio", stdin=b"\0" * 4800, monkeypatch=monkeypatch) == 0
    assert server.path == "/v1/realtime?intent=transcription&store=audio"
    assert capsys.readouterr().out == "Utterance 1 done.\n" * 2  # one a session


def test_an_empty_final_commit_ends_quietly(
    fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake()
    assert run_live(url, "-", "--speed", "0", stdin=b"\0" * 48000 * 2, monkeypatch=monkeypatch) == 0  # 20 tenths
    assert capsys.readouterr().out == "Utterance 1 done.\nUtterance 2 done.\n"


def test_on_a_terminal_deltas_show_and_the_final_text_replaces_them() -> None:
    out = io.StringIO()
    printer = live.Printer(out, tty=True)
    printer.delta("a", "hello")
    printer.delta("a", " wor")
    printer.completed("a", " Hello world. ")
    assert out.getvalue() == "\r\x1b[2Khello\r\x1b[2Khello wor\r\x1b[2KHello world.\n"
    plain = io.StringIO()
    quiet = live.Printer(plain, tty=False)
    quiet.delta("a", "hello")
    quiet.completed("a", "Hello\x1b[31m world.")
    assert plain.getvalue() == "Hello\\x1b[31m world.\n"


def test_a_refused_token_exits_4(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, url = fake(refuse=401)
    assert run_live(url, str(FIXTURES / "short.wav")) == 4
    assert "Missing or wrong credential" in capsys.readouterr().err


def test_a_failed_utterance_exits_1(
    fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake(fail_items=True)
    assert run_live(url, "-", "--speed", "0", "--no-vad", stdin=b"\0" * 4800, monkeypatch=monkeypatch) == 1
    assert "could not be transcribed: model fell over" in capsys.readouterr().err


def test_an_error_event_exits_2(fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = fake(error={"code": "invalid_value", "message": "Unknown model 'nope'"})
    assert run_live(url, "-", "--model", "nope", stdin=b"\0" * 4800, monkeypatch=monkeypatch) == 2
    assert "refused the stream: Unknown model 'nope'" in capsys.readouterr().err


def test_a_full_service_exits_3(fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = fake(error={"code": "session_limit_reached", "message": "All 2 live sessions are in use."})
    assert run_live(url, "-", stdin=b"\0" * 4800, monkeypatch=monkeypatch) == 3
    assert "the service is busy: All 2 live sessions" in capsys.readouterr().err


def test_no_service_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import free_port

    assert run_live(f"http://127.0.0.1:{free_port()}", str(FIXTURES / "short.wav")) == 3
    assert "cannot reach the service" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_the_audio_and_finishes_the_last_words(fake: Any) -> None:
    """A microphone on standard input, never closed: the first Ctrl-C stops
    the audio and waits for its last utterance; exit 0."""
    server, url = fake()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WHISPER_MCP_TOKEN": TOKEN}
    command = [sys.executable, "-m", "whisper_mcp", "live", "-", "--url", url, "--speed", "0"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"\0" * 4800 * 15)  # 1.5 s: one utterance by server VAD, half of the next
        proc.stdin.flush()
        assert proc.stdout.readline() == b"Utterance 1 done.\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == b"Utterance 2 done.\n"
    assert [e["type"] for e in server.received][-2:] == ["input_audio_buffer.commit", "input_audio_buffer.clear"]
