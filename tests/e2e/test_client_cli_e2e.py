"""The client (whisper_mcp.client.http) and its commands (whisper_mcp.client.cli)
against a real server with the real model: in-process through an argparse set
up as cli.py does, and once as ``python -m whisper_mcp.client.cli``."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import FIXTURES, LONG_AUDIO, ROOT, ServerProcess, free_port, words
from whisper_mcp.client import http as client_module
from whisper_mcp.client.http import ClientError, ServiceClient
from whisper_mcp.client.cli import ProgressDisplay, add_client_commands, run_client_command

pytestmark = pytest.mark.e2e

SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
SHORT_WORDS = {"hello", "world", "testing"}


def cli(argv: list[str]) -> int:
    """Parse and run one client command in-process, as `whisper-mcp` will."""
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    return run_client_command(parser.parse_args(argv))


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
        assert match.start() == position, f"garbage before cue at {position}: {text[position:match.start()]!r}"
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


# -- transcribe ----------------------------------------------------------------


def test_transcribe_two_files_in_process(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "nested"
    code = cli(
        [
            "transcribe", str(FIXTURES / "short.wav"), str(FIXTURES / "speech.wav"),
            "--url", server.url, "--out", str(out), "--no-cache", "--language", "en",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err

    short_txt, speech_txt = out / "short.txt", out / "speech.txt"
    assert captured.out.splitlines() == [str(short_txt), str(speech_txt)]
    assert SHORT_WORDS <= words(short_txt.read_text())
    assert len(SPEECH_WORDS & words(speech_txt.read_text())) >= 6, speech_txt.read_text()

    # Not a terminal: one line per status change, per file; nothing else on stdout.
    err = captured.err
    for name in ("short.wav", "speech.wav"):
        lines = [line for line in err.splitlines() if line.startswith(str(FIXTURES / name) + ":")]
        assert any("uploading" in line for line in lines), err
        assert any(re.search(r"job \w+ queued", line) for line in lines), err
        assert any(": completed (" in line for line in lines), err
        # each status change once, never repeated while polling ("processing" may
        # pass between two polls of a short file)
        statuses = [line.split(": ", 1)[1].split(" ")[0] for line in lines]
        assert statuses.count("processing") <= 1 and statuses.count("completed") == 1, lines
    assert "\r" not in err
    assert "error" not in err


def test_transcribe_module_srt_next_to_file(server: ServerProcess, tmp_path: Path) -> None:
    """`python -m whisper_mcp.client.cli`: URL from the environment, output next to the input."""
    audio = tmp_path / "meeting notes.wav"
    audio.write_bytes((FIXTURES / "speech.wav").read_bytes())
    result = run_module("transcribe", str(audio), "--format", "srt", env={"WHISPER_MCP_URL": server.url})
    assert result.returncode == 0, result.stderr
    target = tmp_path / "meeting notes.srt"
    assert result.stdout.strip() == str(target)
    cues = parse_srt(target.read_text(encoding="utf-8"))
    assert cues[-1][1] <= 9.0  # speech.wav is ~7.6 s
    assert len(SPEECH_WORDS & words(" ".join(text for _, _, text in cues))) >= 6, cues
    assert "completed" in result.stderr


def test_formats_written_as_served(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("json", "vtt", "tsv"):
        assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", server.url, "--out", str(tmp_path), "--format", fmt]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "short.json").read_text())
    assert SHORT_WORDS <= words(data["text"]) and data["segments"]
    assert (tmp_path / "short.vtt").read_text().startswith("WEBVTT")
    assert (tmp_path / "short.tsv").read_text().splitlines()[0].split("\t") == ["start", "end", "text"]


def test_no_wait_prints_job_ids_then_status_and_jobs(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", server.url, "--no-wait", "--priority", "low"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert re.fullmatch(r"[A-Za-z0-9._-]+", job_id), captured.out

    with ServiceClient(server.url) as client:
        record = client.wait(job_id, timeout=120)
    assert record["status"] == "completed"

    assert cli(["status", job_id, "--url", server.url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job_id"] == job_id and shown["priority"] == "low"
    assert SHORT_WORDS <= words(shown["transcript"])

    assert cli(["status", "--url", server.url]) == 0
    health = json.loads(capsys.readouterr().out)
    assert health["model_loaded"] is True

    assert cli(["jobs", "--url", server.url, "--status", "completed", "--limit", "500"]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header.split()[:3] == ["JOB_ID", "STATUS", "PROGRESS"]
    row = next(r for r in rows if r.startswith(job_id + " "))
    assert row.split()[1:3] == ["completed", "100%"] and row.endswith("short.wav")
    assert re.search(r"\d+ of \d+ job", captured.err)


# -- errors and exit codes -----------------------------------------------------


def test_missing_file_is_usage_error_and_uploads_nothing(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = ServiceClient(server.url).jobs(limit=1)["total"]
    missing = tmp_path / "nope.wav"
    code = cli(["transcribe", str(FIXTURES / "short.wav"), str(missing), "--url", server.url, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert f"whisper-mcp: error: {missing}: no such file" in captured.err
    assert captured.out == ""
    assert ServiceClient(server.url).jobs(limit=1)["total"] == before
    assert not (tmp_path / "short.txt").exists()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    result = run_module("transcribe", str(FIXTURES / "short.wav"), "--format", "docx")
    assert result.returncode == 2
    assert "invalid choice: 'docx'" in result.stderr
    result = run_module("transcribe")
    assert result.returncode == 2 and "FILE" in result.stderr


def test_unreachable_service_exit_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_module("transcribe", str(FIXTURES / "short.wav"), "--url", url, "--out", str(tmp_path))
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"whisper-mcp: error: cannot reach the service at {url}")
    assert result.stdout == ""
    assert run_module("status", "--url", url).returncode == 3
    assert run_module("jobs", "--url", url).returncode == 3


def test_non_audio_file_reports_service_message(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(FIXTURES / "not_audio.bin", "rb") as f:
        answer = httpx.post(f"{server.url}/transcribe", files={"file": ("not_audio.bin", f)}, timeout=30)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]

    # The good file is still transcribed; the bad one is reported with the service's words.
    code = cli(
        ["transcribe", str(FIXTURES / "not_audio.bin"), str(FIXTURES / "short.wav"), "--url", server.url, "--out", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert f"whisper-mcp: error: {FIXTURES / 'not_audio.bin'}: {message}" in captured.err
    assert captured.out.splitlines() == [str(tmp_path / "short.txt")]
    assert not (tmp_path / "not_audio.txt").exists()


def test_unknown_job_and_bad_option(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["status", "no-such-job", "--url", server.url]) == 2
    assert "whisper-mcp: error: No job with id 'no-such-job'" in capsys.readouterr().err
    assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", server.url, "--model", "no-such-model"]) == 2
    assert "Unknown model 'no-such-model'" in capsys.readouterr().err


def test_cancelled_job_exit_1(server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "cancel-me.mp3"
    audio.write_bytes(LONG_AUDIO.read_bytes())
    result: dict[str, int] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "code", cli(["transcribe", str(audio), "--url", server.url, "--no-cache", "--out", str(tmp_path)])
        )
    )
    runner.start()
    with ServiceClient(server.url) as client:
        deadline = time.monotonic() + 60
        job_id = None
        while job_id is None and time.monotonic() < deadline:
            for job in client.jobs(limit=50)["jobs"]:
                if job["filename"] == audio.name and job["status"] in ("queued", "processing"):
                    job_id = job["job_id"]
            time.sleep(0.1)
        assert job_id, "the job never showed up"
        client.cancel(job_id)
    runner.join(180)
    assert not runner.is_alive()
    captured = capsys.readouterr()
    assert result["code"] == 1, captured.err
    assert f"whisper-mcp: error: {audio}: job {job_id} cancelled" in captured.err
    assert not (tmp_path / "cancel-me.txt").exists()


class TokenServer(ServerProcess):
    """A server started with --token: readiness is polled with the token."""

    TOKEN = "cli-secret"

    def start(self, timeout: float = 120.0) -> "TokenServer":
        cmd = [
            sys.executable, "-m", "whisper_mcp", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--storage", str(self.storage), "--model", "tiny.en", "--token", self.TOKEN,
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with ServiceClient(self.url, token=self.TOKEN, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if client.health().get("model_loaded"):
                        return self
                except ClientError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log()}")


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    root = tmp_path_factory.mktemp("token-server")
    srv = TokenServer(root / "storage", root / "server.log").start()
    yield srv
    srv.stop()


def test_token_sent_from_flag_or_environment(token_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHISPER_MCP_TOKEN", raising=False)
    assert cli(["status", "--url", token_server.url]) == 3
    assert "no token given: use --token or WHISPER_MCP_TOKEN" in capsys.readouterr().err
    assert cli(["status", "--url", token_server.url, "--token", "wrong"]) == 3
    capsys.readouterr()

    assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", token_server.url, "--token", TokenServer.TOKEN, "--out", str(tmp_path)]) == 0
    assert SHORT_WORDS <= words((tmp_path / "short.txt").read_text())
    monkeypatch.setenv("WHISPER_MCP_TOKEN", TokenServer.TOKEN)
    assert cli(["jobs", "--url", token_server.url]) == 0
    assert "short.wav" in capsys.readouterr().out


# -- the client library --------------------------------------------------------


def test_client_roundtrip_and_error_shape(server: ServerProcess) -> None:
    updates: list[dict] = []
    with ServiceClient(server.url) as client:
        job = client.submit(FIXTURES / "speech.wav", cache=False, language="en", priority="urgent")
        assert job["status"] == "queued"
        final = client.wait(job["job_id"], on_update=updates.append, poll=0.1)
        assert final["status"] == "completed"
        assert updates[-1] is final and all(u["job_id"] == job["job_id"] for u in updates)
        assert client.download(job["job_id"], "txt") == final["transcript"]
        assert client.status(job["job_id"], "srt")["transcript"] == client.download(job["job_id"], "srt")
        assert client.health()["status"] == "ok"
        listed = client.jobs(status="completed", limit=5, offset=0)
        assert {"jobs", "total", "next_offset"} <= set(listed)

        with pytest.raises(ClientError) as info:
            client.status("no-such-job")
        assert info.value.status_code == 404 and info.value.code == "job_not_found"
        assert "No job with id" in info.value.message

        with pytest.raises(ClientError) as info:
            client.submit(FIXTURES / "not_audio.bin")
        assert info.value.status_code == 400 and info.value.code == "invalid_audio"


def test_wait_timeout_leaves_job_running(server: ServerProcess) -> None:
    with ServiceClient(server.url) as client:
        job = client.submit(LONG_AUDIO, cache=False, priority="low")
        started = time.monotonic()
        with pytest.raises(ClientError, match="did not finish within 0.3 s"):
            client.wait(job["job_id"], poll=0.1, timeout=0.3)
        assert time.monotonic() - started < 5
        client.cancel(job["job_id"])


def test_upload_is_streamed_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submit() hands httpx the open file: it is read in bounded chunks and sent
    with a Content-Length, never loaded whole."""
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    reads: list[int | None] = []
    real_open = open

    class Recorder(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
            reads.append(size)
            return super().read(size)

    def recording_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if mode == "rb":
            return Recorder(io.FileIO(path, "rb"))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(client_module, "open", recording_open, raising=False)
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["length"] = int(request.headers["content-length"])
        seen["auth"] = request.headers.get("authorization")
        seen["body"] = request.content
        return httpx.Response(202, json={"job_id": "j1", "status": "queued"})

    with ServiceClient("http://service.test", token="t0k", transport=httpx.MockTransport(handler)) as client:
        assert client.submit(big, language="en", cache=False, beam_size=None)["job_id"] == "j1"
    assert reads and all(size is not None and 0 < size <= 1024 * 1024 for size in reads), reads
    assert seen["auth"] == "Bearer t0k"
    body = seen["body"]
    assert isinstance(body, bytes) and len(body) == seen["length"]
    assert b'name="language"\r\n\r\nen' in body and b'name="cache"\r\n\r\nfalse' in body
    assert b"beam_size" not in body


def test_error_messages_from_any_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(503, text="<html>Service Unavailable</html>")
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "Missing or wrong bearer token"}})

    with ServiceClient("http://service.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError) as info:
            client.health()
        assert info.value.status_code == 503 and "503" in info.value.message and "Service Unavailable" in info.value.message
        with pytest.raises(ClientError) as info:
            client.jobs()
        assert (info.value.status_code, info.value.code, info.value.message) == (401, "unauthorized", "Missing or wrong bearer token")


def test_progress_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, "talk.wav", tty=True, status="queued")
    display.update({"status": "queued", "queue_position": 2, "progress": 0.0})
    display.update({"status": "processing", "progress": 0.5, "eta_seconds": 12.0})
    display.update({"status": "completed", "progress": 1.0, "audio_seconds": 60.0, "started_at": 1.0, "finished_at": 21.0})
    display.done()
    text = stream.getvalue()
    frames = text.rstrip("\n").split("\r")[1:]
    assert text.endswith("\n") and text.count("\n") == 1
    assert frames[0].startswith("talk.wav [------------------------]   0% queued (position 2)")
    assert frames[1].startswith("talk.wav [############------------]  50% processing, about 12 s left")
    assert frames[2].rstrip() == "talk.wav [########################] 100% completed (60.0 s of audio in 20.0 s)"
    # a shorter frame blanks out what a longer one left behind
    assert len(frames[2]) >= len(frames[1])
