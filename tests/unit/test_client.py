"""The client library (whisper_mcp.client.http) and its commands
(whisper_mcp.client.cli): options, output, errors and exit codes, in process
against the real app over a fake engine. The real CLI process against a real
server and model: tests/e2e/test_client_cli_e2e.py."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from whisper_mcp.client import console
from whisper_mcp.client import http as client_module
from whisper_mcp.client.cli import ProgressDisplay, add_client_commands, main, run_client_command
from whisper_mcp.client.http import ClientError, ServiceClient

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, free_port

SHORT = "fake transcript of 2.4 seconds\n"  # short.wav over the fake engine
SPEECH = "fake transcript of 7.6 seconds\n"  # speech.wav


def cli(argv: list[str]) -> int:
    """Parse and run one client command in-process, as `whisper-mcp` does."""
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    return run_client_command(parser.parse_args(argv))


@pytest.fixture
def held(tmp_path: Path) -> Iterator[InProcessServer]:
    """A server whose jobs start and then wait until ``engine.gate`` is set."""
    engine = FakeEngine()
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        try:
            yield srv
        finally:
            engine.gate.set()


# -- transcribe ----------------------------------------------------------------


def test_transcribe_two_files(fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "nested"
    code = cli(
        [
            "transcribe", str(FIXTURES / "short.wav"), str(FIXTURES / "speech.wav"),
            "--url", fake_server.url, "--out", str(out), "--no-cache", "--language", "en",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err

    short_txt, speech_txt = out / "short.txt", out / "speech.txt"
    assert captured.out.splitlines() == [str(short_txt), str(speech_txt)]
    assert short_txt.read_text() == SHORT and speech_txt.read_text() == SPEECH
    assert sorted(p.name for p in out.iterdir()) == ["short.txt", "speech.txt"]  # no temporary leftovers

    # Not a terminal: one line per status change, per file; nothing else on stdout.
    err = captured.err
    for name in ("short.wav", "speech.wav"):
        lines = [line for line in err.splitlines() if line.startswith(str(FIXTURES / name) + ":")]
        assert any(re.search(r"uploading \(\d+\.\d KB\)", line) for line in lines), err
        assert any(re.search(r"job \w+ queued", line) for line in lines), err
        assert any(": completed (" in line for line in lines), err
        statuses = [line.split(": ", 1)[1].split(" ")[0] for line in lines]
        assert statuses.count("processing") <= 1 and statuses.count("completed") == 1, lines
    assert "\r" not in err
    assert "error" not in err


def test_options_reach_the_job(fake_server: InProcessServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(
        [
            "transcribe", str(FIXTURES / "short.wav"), "--url", fake_server.url, "--no-wait",
            "--model", "base", "--language", "de", "--task", "translate", "--priority", "urgent", "--no-cache",
        ]
    ) == 0  # fmt: skip
    job_id = capsys.readouterr().out.strip()
    with ServiceClient(fake_server.url) as client:
        record = client.wait(job_id, poll=0.05, timeout=10)
    assert (record["model"], record["language"], record["priority"]) == ("base", "de", "urgent")
    assert record["options"] == {"task": "translate"}


def test_cache_flag(fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = str(FIXTURES / "short.wav")
    assert cli(["transcribe", audio, "--url", fake_server.url, "--out", str(tmp_path)]) == 0
    assert cli(["transcribe", audio, "--url", fake_server.url, "--out", str(tmp_path)]) == 0
    assert "completed (cached transcript)" in capsys.readouterr().err
    assert len(fake_server.engine.batches) == 1  # the second answer came from the cache
    assert cli(["transcribe", audio, "--url", fake_server.url, "--out", str(tmp_path), "--no-cache"]) == 0
    assert "cached" not in capsys.readouterr().err
    assert len(fake_server.engine.batches) == 2
    assert (tmp_path / "short.txt").read_text() == SHORT


def test_formats_written_as_served(
    fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("json", "srt", "vtt", "tsv"):
        assert (
            cli(
                [
                    "transcribe",
                    str(FIXTURES / "short.wav"),
                    "--url",
                    fake_server.url,
                    "--out",
                    str(tmp_path),
                    "--format",
                    fmt,
                ]
            )
            == 0
        )
    job_id = ServiceClient(fake_server.url).jobs(limit=1)["jobs"][0]["job_id"]
    capsys.readouterr()
    for fmt in ("json", "srt", "vtt", "tsv"):
        served = httpx.get(f"{fake_server.url}/download/{job_id}", params={"format": fmt}).text
        assert (tmp_path / f"short.{fmt}").read_text() == served, fmt
    data = json.loads((tmp_path / "short.json").read_text())
    assert data["text"] == SHORT.strip() and data["segments"]
    assert (tmp_path / "short.vtt").read_text().startswith("WEBVTT")
    assert (tmp_path / "short.srt").read_text().startswith("1\n00:00:00,000 --> 00:00:02,")
    assert (tmp_path / "short.tsv").read_text().splitlines()[0].split("\t") == ["start", "end", "text"]


def test_no_wait_prints_job_ids_then_status_and_jobs(
    fake_server: InProcessServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli(["transcribe", str(FIXTURES / "short.wav"), "--url", fake_server.url, "--no-wait", "--priority", "low"])
        == 0
    )
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert re.fullmatch(r"[A-Za-z0-9._-]+", job_id), captured.out

    with ServiceClient(fake_server.url) as client:
        record = client.wait(job_id, poll=0.05, timeout=10)
    assert record["status"] == "completed"

    assert cli(["status", job_id, "--url", fake_server.url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job_id"] == job_id and shown["priority"] == "low"
    assert shown["transcript"] == SHORT

    assert cli(["status", "--url", fake_server.url]) == 0
    health = json.loads(capsys.readouterr().out)
    assert health["model_loaded"] is True and health["engine"] == "fake"

    assert cli(["jobs", "--url", fake_server.url, "--status", "completed", "--limit", "500"]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header.split() == ["JOB_ID", "STATUS", "PROGRESS", "MODEL", "PRIORITY", "AUDIO", "CREATED", "FILE"]
    [row] = rows
    assert row.startswith(job_id + " ")
    assert row.split()[1:6] == ["completed", "100%", "tiny.en", "low", "2.4s"] and row.endswith("short.wav")
    assert captured.err.strip() == "1 of 1 job(s)"


def test_jobs_pages_and_queue_positions(held: InProcessServer, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", held.url, "--no-wait", "--no-cache"]) == 0
    assert held.engine.started.wait(10)
    capsys.readouterr()
    assert cli(["jobs", "--url", held.url, "--limit", "2"]) == 0
    captured = capsys.readouterr()
    _, running, queued = captured.out.splitlines()
    assert running.split()[1] == "processing"
    assert queued.split()[1:3] == ["queued", "#1"]
    assert captured.err.strip() == "2 of 3 job(s); more with --offset 2"
    assert cli(["jobs", "--url", held.url, "--limit", "0"]) == 2
    assert "--limit must be from 1 to 500" in capsys.readouterr().err


# -- errors and exit codes -----------------------------------------------------


def test_missing_file_is_usage_error_and_uploads_nothing(
    fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.wav"
    code = cli(
        ["transcribe", str(FIXTURES / "short.wav"), str(missing), "--url", fake_server.url, "--out", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert f"whisper-mcp: error: {missing}: no such file" in captured.err
    assert captured.out == ""
    assert ServiceClient(fake_server.url).jobs(limit=1)["total"] == 0
    assert not (tmp_path / "short.txt").exists()


def test_clashing_outputs_are_usage_errors(
    fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "short.wav").write_bytes((FIXTURES / "short.wav").read_bytes())
    out = tmp_path / "out"
    code = cli(
        [
            "transcribe",
            str(FIXTURES / "short.wav"),
            str(other / "short.wav"),
            "--url",
            fake_server.url,
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "would both write" in capsys.readouterr().err
    txt = tmp_path / "rec.txt"
    txt.write_bytes((FIXTURES / "short.wav").read_bytes())
    assert cli(["transcribe", str(txt), "--url", fake_server.url]) == 2
    assert "would overwrite the recording" in capsys.readouterr().err
    assert ServiceClient(fake_server.url).jobs(limit=1)["total"] == 0 and not out.exists()


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(FIXTURES / "short.wav"), "--format", "docx"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'docx'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe"])
    assert exit_info.value.code == 2 and "FILE" in capsys.readouterr().err


def test_unreachable_service_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["transcribe", str(FIXTURES / "short.wav"), "--url", url, "--out", str(tmp_path)]) == 3
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith(f"whisper-mcp: error: cannot reach the service at {url}")
    assert "is it running? set --url or WHISPER_MCP_URL" in captured.err
    assert captured.out == ""
    assert main(["status", "--url", url]) == 3
    assert main(["jobs", "--url", url]) == 3


def test_url_from_the_environment(
    fake_server: InProcessServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WHISPER_MCP_URL", fake_server.url)
    assert main(["status"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "tiny.en"


def test_non_audio_file_reports_service_message(
    fake_server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(FIXTURES / "not_audio.bin", "rb") as f:
        answer = httpx.post(f"{fake_server.url}/transcribe", files={"file": ("not_audio.bin", f)}, timeout=30)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]

    # The good file is still transcribed; the bad one is reported with the service's words.
    code = cli(
        [
            "transcribe",
            str(FIXTURES / "not_audio.bin"),
            str(FIXTURES / "short.wav"),
            "--url",
            fake_server.url,
            "--out",
            str(tmp_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert f"whisper-mcp: error: {FIXTURES / 'not_audio.bin'}: {message}" in captured.err
    assert captured.out.splitlines() == [str(tmp_path / "short.txt")]
    assert not (tmp_path / "not_audio.txt").exists()


def test_unknown_job_and_bad_option(fake_server: InProcessServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["status", "no-such-job", "--url", fake_server.url]) == 2
    assert "whisper-mcp: error: No job with id 'no-such-job'" in capsys.readouterr().err
    assert cli(["transcribe", str(FIXTURES / "short.wav"), "--url", fake_server.url, "--model", "no-such-model"]) == 2
    assert "Unknown model 'no-such-model'" in capsys.readouterr().err


def test_cancelled_job_exit_1(held: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "cancel-me.wav"
    audio.write_bytes((FIXTURES / "short.wav").read_bytes())
    result: dict[str, int] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "code", cli(["transcribe", str(audio), "--url", held.url, "--out", str(tmp_path)])
        )
    )
    runner.start()
    assert held.engine.started.wait(10)
    with ServiceClient(held.url) as client:
        [job] = client.jobs()["jobs"]
        assert job["filename"] == audio.name and job["status"] == "processing"
        client.cancel(job["job_id"])
    held.engine.gate.set()  # the fake's next progress report sees the cancel
    runner.join(30)
    assert not runner.is_alive()
    captured = capsys.readouterr()
    assert result["code"] == 1, captured.err
    assert f"whisper-mcp: error: {audio}: job {job['job_id']} cancelled" in captured.err
    assert not (tmp_path / "cancel-me.txt").exists()


def test_token_sent_from_flag_or_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = 4  # credentials refused (HTTP 401/403)
    monkeypatch.delenv("WHISPER_MCP_TOKEN", raising=False)
    with InProcessServer.start(tmp_path / "storage", token="cli-secret") as srv:
        assert cli(["status", "--url", srv.url]) == refused
        assert "no token given: use --token or WHISPER_MCP_TOKEN" in capsys.readouterr().err
        assert cli(["status", "--url", srv.url, "--token", "wrong"]) == refused
        err = capsys.readouterr().err
        assert "whisper-mcp: error:" in err and "no token given" not in err

        out = tmp_path / "out"
        assert (
            cli(
                [
                    "transcribe",
                    str(FIXTURES / "short.wav"),
                    "--url",
                    srv.url,
                    "--token",
                    "cli-secret",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert (out / "short.txt").read_text() == SHORT
        monkeypatch.setenv("WHISPER_MCP_TOKEN", "cli-secret")
        assert cli(["jobs", "--url", srv.url]) == 0
        assert "short.wav" in capsys.readouterr().out


# -- the client library --------------------------------------------------------


def test_client_roundtrip_and_error_shape(fake_server: InProcessServer) -> None:
    updates: list[dict] = []
    with ServiceClient(fake_server.url) as client:
        job = client.submit(FIXTURES / "speech.wav", cache=False, language="en", priority="urgent")
        assert job["status"] == "queued" and job["priority"] == "urgent"
        final = client.wait(job["job_id"], on_update=updates.append, poll=0.05)
        assert final["status"] == "completed" and final["transcript"] == SPEECH
        assert updates[-1] is final and all(u["job_id"] == job["job_id"] for u in updates)
        assert client.download(job["job_id"], "txt") == final["transcript"]
        assert client.status(job["job_id"], "srt")["transcript"] == client.download(job["job_id"], "srt")
        assert client.health()["status"] == "ok"
        assert {m["name"] for m in client.models()["models"]} == {"tiny.en", "base"}
        listed = client.jobs(status="completed", limit=5, offset=0)
        assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]
        assert listed["total"] == 1 and listed["next_offset"] is None

        with pytest.raises(ClientError) as info:
            client.status("no-such-job")
        assert info.value.status_code == 404 and info.value.code == "job_not_found"
        assert "No job with id" in info.value.message

        with pytest.raises(ClientError) as info:
            client.submit(FIXTURES / "not_audio.bin")
        assert info.value.status_code == 400 and info.value.code == "invalid_audio"

        with pytest.raises(ClientError, match="cannot read"):
            client.submit(FIXTURES / "no-such-file.wav")


def test_wait_timeout_leaves_job_running(held: InProcessServer) -> None:
    with ServiceClient(held.url) as client:
        job = client.submit(FIXTURES / "short.wav", cache=False, priority="low")
        started = time.monotonic()
        with pytest.raises(ClientError, match="did not finish within 0.3 s"):
            client.wait(job["job_id"], poll=0.1, timeout=0.3)
        assert time.monotonic() - started < 5
        assert client.status(job["job_id"])["status"] in ("queued", "processing")
        assert client.cancel(job["job_id"])["job_id"] == job["job_id"]


def test_wait_outlasts_a_service_restart() -> None:
    """The queue is durable: while the service is away (restarting), a wait keeps
    polling for up to ``reconnect_for`` seconds in a row."""
    answers = iter(["queued", "down", "down", "processing", "down", "completed"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        seen.append(answer)
        if answer == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"job_id": "j1", "status": answer})

    updates: list[dict] = []
    with ServiceClient("http://service.test", transport=httpx.MockTransport(handler)) as client:
        record = client.wait("j1", on_update=updates.append, poll=0.01, reconnect_for=5)
    assert record["status"] == "completed"
    assert seen == ["queued", "down", "down", "processing", "down", "completed"]
    assert [u["status"] for u in updates] == ["queued", "processing", "completed"]

    def always_down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with ServiceClient("http://service.test", transport=httpx.MockTransport(always_down)) as client:
        started = time.monotonic()
        with pytest.raises(ClientError) as info:
            client.wait("j1", poll=0.02, reconnect_for=0.3)
        assert 0.25 < time.monotonic() - started < 5
        assert info.value.unreachable and "cannot reach the service" in info.value.message


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


class ChangeThenRead(httpx.BaseTransport):
    """Calls ``change`` after the request is sent off and before its body is
    read, as a file changes while the upload is on its way; keeps the body."""

    def __init__(self, change: Callable[[], None]) -> None:
        self.change = change
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.change()
        self.bodies.append(b"".join(request.stream))  # type: ignore[arg-type]
        return httpx.Response(202, json={"job_id": "j1", "status": "queued"})


def test_a_file_that_grows_or_shrinks_during_the_upload(tmp_path: Path) -> None:
    """The request declares the file's size when the upload began: bytes added
    later are not sent, and a file cut short ends the upload with a file
    error (exit 2), never a protocol error or 'service unreachable'."""
    recording = tmp_path / "meeting.wav"
    recording.write_bytes(b"x" * 300_000)

    def grow() -> None:
        with open(recording, "ab") as f:
            f.write(b"y" * 100)

    grows = ChangeThenRead(grow)
    with ServiceClient("http://service.test", transport=grows) as client:
        assert client.submit(recording)["job_id"] == "j1"
    assert grows.bodies[0].count(b"x") == 300_000 and b"yy" not in grows.bodies[0]

    with ServiceClient("http://service.test", transport=ChangeThenRead(lambda: os.truncate(recording, 1000))) as client:
        with pytest.raises(ClientError) as info:
            client.submit(recording)
    assert info.value.code == "file_changed" and not info.value.unreachable
    assert info.value.message == "meeting.wav: it became shorter while it was being uploaded"
    assert console.exit_code(info.value) == 2


def test_names_print_on_one_line_with_nothing_for_the_terminal() -> None:
    cases = {
        "plain name.wav": "plain name.wav",
        "Ünïcode – ok.wav": "Ünïcode – ok.wav",
        "two\nlines.wav": "two\\nlines.wav",
        "red\x1b[31m.wav": "red\\x1b[31m.wav",
        "cr\rnul\0tab\t.wav": "cr\\rnul\\x00tab\\t.wav",
        "rtl\u202eoverride.wav": "rtl\\u202eoverride.wav",
        os.fsdecode(b"bad\xff.wav"): "bad\\xff.wav",
        "back\\slash.wav": "back\\\\slash.wav",
    }
    assert {name: console.printable(name) for name in cases} == cases
    assert console.terminal_safe("C:\\x \x1b[2J") == "C:\\x \\x1b[2J"  # backslashes left, controls escaped
    stream = io.StringIO()
    ProgressDisplay(stream, "x", tty=False).update({"status": "failed", "error": "bad\x1b]0;title\x07"})
    assert stream.getvalue() == "x: failed: bad\\x1b]0;title\\x07\n"


def test_error_messages_from_any_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(503, text="<html>Service Unavailable</html>")
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "Missing or wrong bearer token"}})

    with ServiceClient("http://service.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError) as info:
            client.health()
        assert (
            info.value.status_code == 503
            and "503" in info.value.message
            and "Service Unavailable" in info.value.message
        )
        with pytest.raises(ClientError) as info:
            client.jobs()
        assert (info.value.status_code, info.value.code, info.value.message) == (
            401,
            "unauthorized",
            "Missing or wrong bearer token",
        )


def test_progress_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, "talk.wav", tty=True, status="queued")
    display.update({"status": "queued", "queue_position": 2, "progress": 0.0})
    display.update({"status": "processing", "progress": 0.5, "eta_seconds": 12.0})
    display.update(
        {"status": "completed", "progress": 1.0, "audio_seconds": 60.0, "started_at": 1.0, "finished_at": 21.0}
    )
    display.done()
    text = stream.getvalue()
    frames = text.rstrip("\n").split("\r")[1:]
    assert text.endswith("\n") and text.count("\n") == 1
    assert frames[0].startswith("talk.wav [------------------------]   0% queued (position 2)")
    assert frames[1].startswith("talk.wav [############------------]  50% processing, about 12 s left")
    assert frames[2].rstrip() == "talk.wav [########################] 100% completed (60.0 s of audio in 20.0 s)"
    # a shorter frame blanks out what a longer one left behind
    assert len(frames[2]) >= len(frames[1])
