"""``whisper-mcp watch`` (whisper_mcp.client.watch) against the real app over a
fake engine, in process. Settling is driven by a fake clock, so nothing here
depends on how fast the machine is."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from whisper_mcp.client import watch as watch_module
from whisper_mcp.client.cli import add_client_commands, run_client_command
from whisper_mcp.client.http import ServiceClient
from whisper_mcp.client.watch import STATE_FILE, Watcher, is_candidate, job_id_for
from whisper_mcp.queue.jobs import JOB_ID

from fakes import FakeEngine
from helpers import FIXTURES, ROOT, InProcessServer, free_port

SPEECH = FIXTURES / "speech.wav"


class FakeClock:
    """Time that moves only when told to (``sleep`` moves it too, and yields
    briefly so the server's threads get on with the jobs)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        time.sleep(0.005)


class Recorder(httpx.HTTPTransport):
    """A real transport that notes each request as "METHOD /path"."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)

    def uploads(self) -> list[str]:
        return [r for r in self.requests if r == "POST /transcribe"]


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", FakeEngine()) as server:
        yield server


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


def server_jobs(srv: InProcessServer) -> list[dict]:
    with srv.client() as c:
        return c.get("/jobs", params={"limit": 500}).json()["jobs"]


def watcher(srv: InProcessServer, folder: Path, transport: Recorder | None = None, **kwargs: object) -> Watcher:
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("sleep", kwargs["clock"].sleep)  # type: ignore[union-attr]
    kwargs.setdefault("stdout", io.StringIO())
    kwargs.setdefault("stderr", io.StringIO())
    kwargs.setdefault("once", True)
    kwargs.setdefault("interval", 0.05)
    return Watcher(ServiceClient(srv.url, transport=transport), folder, **kwargs)  # type: ignore[arg-type]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client_command(parser.parse_args(argv))


def quick(srv_url: str, folder: Path, *extra: str) -> list[str]:
    return ["watch", str(folder), "--url", srv_url, "--settle-seconds", "0", "--interval", "0.02", *extra]


def test_a_file_written_in_two_steps_is_uploaded_once_after_it_settles(srv: InProcessServer, folder: Path) -> None:
    data = SPEECH.read_bytes()
    recording = folder / "meeting.wav"
    recording.write_bytes(data[: len(data) // 2])
    clock = FakeClock()
    w = watcher(srv, folder, clock=clock, settle=10)

    w.step()
    clock.t += 9
    w.step()
    assert server_jobs(srv) == []  # 9 s of the 10 s: not yet

    with open(recording, "ab") as f:  # the recorder writes the rest
        f.write(data[len(data) // 2 :])
    clock.t += 5
    w.step()  # changed: settling starts again
    clock.t += 9
    w.step()
    assert server_jobs(srv) == []
    clock.t += 1
    w.step()  # 10 s unchanged: uploaded
    assert w.run() == 0

    expected_id = job_id_for("meeting.wav", hashlib.sha256(data).hexdigest(), {})
    assert [j["job_id"] for j in server_jobs(srv)] == [expected_id]
    job = srv.service.queue.get(expected_id)
    assert job is not None and job.audio_bytes == len(data)  # the whole file, not the first half
    transcript = (folder / "meeting.txt").read_text()
    assert transcript.startswith("fake transcript of")
    assert w.stdout.getvalue().splitlines() == [str(folder / "meeting.txt")]  # type: ignore[attr-defined]
    assert w.stderr.getvalue().count("still being written") == 1  # type: ignore[attr-defined]


def test_a_restarted_watcher_resumes_its_jobs_and_never_queues_twice(tmp_path: Path, folder: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()  # jobs stay queued / processing until released
    (folder / "a.wav").write_bytes(SPEECH.read_bytes())
    (folder / "b.mp3").write_bytes((FIXTURES / "speech.mp3").read_bytes())
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        first = watcher(srv, folder, settle=0)
        first.step()  # both settled (settle 0) and uploaded; then the watcher "crashes"
        first.client.close()
        ids = sorted(j["job_id"] for j in server_jobs(srv))
        assert len(ids) == 2 and all(j["status"] in ("queued", "processing") for j in server_jobs(srv))

        seen = Recorder()
        second = watcher(srv, folder, seen, settle=0)
        second.step()
        assert seen.uploads() == []  # found its jobs by id: resumed, not uploaded again
        assert "resuming job" in second.stderr.getvalue()  # type: ignore[attr-defined]
        engine.gate.set()
        assert second.run() == 0
        assert seen.uploads() == []
        assert sorted(j["job_id"] for j in server_jobs(srv)) == ids
        assert (folder / "a.txt").exists() and (folder / "b.txt").exists()

        # Once the transcripts are there, a new run does not even ask the service.
        third_seen = Recorder()
        third = watcher(srv, folder, third_seen, settle=0)
        assert third.run() == 0
        assert third_seen.requests == []
        assert "2 up to date" in third.stderr.getvalue()  # type: ignore[attr-defined]

        # A lost transcript is fetched again from the finished job, not re-queued.
        (folder / "a.txt").unlink()
        fourth_seen = Recorder()
        assert watcher(srv, folder, fourth_seen, settle=0).run() == 0
        assert fourth_seen.uploads() == [] and (folder / "a.txt").exists()
        assert sorted(j["job_id"] for j in server_jobs(srv)) == ids


def test_not_audio_is_reported_once_and_skipped_and_own_files_are_ignored(
    srv: InProcessServer, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "notes.bin").write_bytes((FIXTURES / "not_audio.bin").read_bytes())
    (folder / "speech.wav").write_bytes(SPEECH.read_bytes())
    # Valid audio under names the watcher must leave alone: if it took them,
    # they would become jobs and transcripts.
    for name in (".hidden.wav", "take2.wav.part", "take3.tmp", "take4.wav~", "speech.json"):
        (folder / name).write_bytes(SPEECH.read_bytes())

    assert cli(quick(srv.url, folder, "--once")) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(folder / "speech.txt")]
    assert err.count("notes.bin: skipped: refused by the service") == 1, err
    assert len(server_jobs(srv)) == 1
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".txt") == ["speech.txt"]
    state = json.loads((folder / STATE_FILE).read_text())
    assert list(state["given_up"]) == [str((folder / "notes.bin").resolve())]

    # The next run remembers the refusal: no upload, no report, nothing failed.
    assert cli(quick(srv.url, folder, "--once")) == 0
    out, err = capsys.readouterr()
    assert out == "" and "notes.bin" not in err and "1 skipped earlier" in err and "1 up to date" in err

    # A changed file is tried again.
    with open(folder / "notes.bin", "ab") as f:
        f.write(b"more")
    assert cli(quick(srv.url, folder, "--once")) == 2
    assert capsys.readouterr().err.count("notes.bin: skipped") == 1


def test_once_writes_atomically_into_out_in_the_chosen_format(
    srv: InProcessServer,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("speech.wav", "short.wav"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    written: list[Path] = []
    real = watch_module.write_text_atomic

    def spy(path: Path, text: str, *mode: int) -> None:
        written.append(path)
        real(path, text, *mode)

    monkeypatch.setattr(watch_module, "write_text_atomic", spy)
    out_dir = tmp_path / "transcripts" / "srt"
    assert cli(quick(srv.url, folder, "--once", "--out", str(out_dir), "--format", "srt")) == 0
    out, err = capsys.readouterr()
    targets = [out_dir / "short.srt", out_dir / "speech.srt"]
    assert out.splitlines() == [str(t) for t in targets]
    assert sorted(written) == targets
    assert sorted(out_dir.iterdir()) == targets  # no temporary files left, no state file
    assert sorted(p.name for p in folder.iterdir()) == ["short.wav", "speech.wav"]
    assert targets[0].read_text().startswith("1\n00:00:00,000 --> ")
    assert "done: 2 written" in err


def test_unreachable_service_is_retried_until_it_answers(tmp_path: Path, folder: Path) -> None:
    (folder / "speech.wav").write_bytes(SPEECH.read_bytes())
    port = free_port()
    stderr = io.StringIO()
    w = Watcher(
        ServiceClient(f"http://127.0.0.1:{port}", timeout=5), folder, settle=0, interval=0.05, once=True,
        stdout=io.StringIO(), stderr=stderr,
    )  # fmt: skip
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(w.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "retrying in" not in stderr.getvalue():
        assert time.monotonic() < deadline and thread.is_alive(), stderr.getvalue()
        time.sleep(0.02)
    with InProcessServer.start(tmp_path / "storage", port=port):
        thread.join(60)
        assert result == [0], stderr.getvalue()
    assert "cannot reach the service" in stderr.getvalue()
    assert "the service answers again" in stderr.getvalue()
    assert (folder / "speech.txt").exists()


def test_gives_up_after_the_given_time(folder: Path) -> None:
    (folder / "speech.wav").write_bytes(SPEECH.read_bytes())
    clock = FakeClock()
    stderr = io.StringIO()
    w = Watcher(
        ServiceClient(f"http://127.0.0.1:{free_port()}", timeout=5), folder, settle=0, interval=1, once=True,
        give_up_after=20, stdout=io.StringIO(), stderr=stderr, clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert w.run() == 3
    waits = [
        float(line.rsplit("retrying in ", 1)[1].split()[0])
        for line in stderr.getvalue().splitlines()
        if "retrying in" in line
    ]
    assert waits == [1, 2, 4, 8, 16]  # backing off
    assert "gave up after" in stderr.getvalue()


def test_refused_credentials_and_options_end_the_watch(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WHISPER_MCP_TOKEN", raising=False)
    (folder / "speech.wav").write_bytes(SPEECH.read_bytes())
    with InProcessServer.start(tmp_path / "storage", token="s3cret") as srv:
        assert cli(quick(srv.url, folder)) == 4  # not --once: it still stops
        assert "no token given: use --token or WHISPER_MCP_TOKEN" in capsys.readouterr().err
        assert cli(quick(srv.url, folder, "--once", "--token", "s3cret", "--model", "no-such-model")) == 2
        assert "Unknown model" in capsys.readouterr().err
        assert not (folder / STATE_FILE).exists()  # an option error is not the file's fault
        assert cli(quick(srv.url, folder, "--once", "--token", "s3cret")) == 0


def test_a_failed_job_is_reported_once(srv: InProcessServer, folder: Path) -> None:
    (folder / "speech.wav").write_bytes(SPEECH.read_bytes())
    srv.engine.gate.clear()
    w = watcher(srv, folder, settle=0)
    w.step()
    (job_id,) = [j["job_id"] for j in server_jobs(srv)]
    with srv.client() as c:
        assert c.delete(f"/jobs/{job_id}").status_code == 200
    srv.engine.gate.set()
    assert w.run() == 1
    assert w.stderr.getvalue().count(f"job {job_id} cancelled") == 1  # type: ignore[attr-defined]
    again = watcher(srv, folder, settle=0)
    assert again.run() == 0 and "1 skipped earlier" in again.stderr.getvalue()  # type: ignore[attr-defined]


def test_job_ids_are_valid_and_stable() -> None:
    sha = "ab" * 32
    for name in ("standup 2026-03-02 09:30.wav", "..Ünïcode – name!!.mp3", "-.wav", "x" * 300 + ".flac", "noext"):
        job_id = job_id_for(name, sha, {})
        assert JOB_ID.match(job_id), job_id
        assert job_id == job_id_for(name, sha, {"priority": "urgent", "cache": False})  # not part of the id
    assert job_id_for("standup 2026-03-02 09:30.wav", sha, {}).startswith("standup_2026-03-02_09_30-")
    assert job_id_for("a.wav", sha, {}) != job_id_for("a.wav", "cd" * 32, {})
    assert job_id_for("a.wav", sha, {}) != job_id_for("a.wav", sha, {"model": "base"})
    assert [is_candidate(n) for n in ("a.wav", "a.txt", "a.SRT", ".a.wav", "a.wav.part", "~a.wav", "a")] == [
        True, False, False, False, False, False, True,
    ]  # fmt: skip


def test_two_recordings_with_one_transcript_name_the_first_wins(srv: InProcessServer, folder: Path) -> None:
    (folder / "a.wav").write_bytes(SPEECH.read_bytes())
    (folder / "a.mp3").write_bytes((FIXTURES / "speech.mp3").read_bytes())
    w = watcher(srv, folder, settle=0)
    assert w.run() == 2
    assert "a.wav: skipped: a.mp3 writes" in w.stderr.getvalue()  # type: ignore[attr-defined]
    assert [j["filename"] for j in server_jobs(srv)] == ["a.mp3"]
    assert (folder / "a.txt").exists() and not (folder / STATE_FILE).exists()


# -- files that must not stop the watcher (the real command, in a subprocess) ------------------------


def watch_process(url: str, folder: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m whisper_mcp watch DIR --once`` as a user runs it."""
    argv = [sys.executable, "-m", "whisper_mcp", *quick(url, folder, "--once", *extra)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # runs a program
def test_a_name_that_is_not_utf8_is_sent_under_a_safe_name_and_the_rest_goes_on(
    srv: InProcessServer, folder: Path
) -> None:
    bad = os.fsencode(folder) + b"/bad\xff.wav"
    with open(bad, "wb") as f:
        f.write(SPEECH.read_bytes())
    (folder / "good.wav").write_bytes((FIXTURES / "short.wav").read_bytes())

    result = watch_process(srv.url, folder)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"{folder}/bad\\xff.txt", str(folder / "good.txt")]
    assert os.path.exists(os.fsencode(folder) + b"/bad\xff.txt")  # the transcript keeps the real name
    assert sorted(j["filename"] for j in server_jobs(srv)) == ["bad\ufffd.wav", "good.wav"]
    assert "bad\\xff.wav: uploading" in result.stderr

    again = watch_process(srv.url, folder)  # a restart finds both done
    assert again.returncode == 0 and again.stdout == "" and "2 up to date" in again.stderr, again.stderr


class HoldingProxy:
    """A TCP proxy in front of a server that stops passing a client's bytes on
    once ``hold_after`` of them have gone through one connection (the first
    time only): ``holding`` is set then, and it goes on once ``release`` is."""

    def __init__(self, upstream_port: int, hold_after: int) -> None:
        self.upstream_port = upstream_port
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                passed += len(data)
                if from_client and passed > self.hold_after and not self.release.is_set():
                    self.holding.set()
                    self.release.wait(60)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.release.set()
        for s in self.sockets:
            s.close()


@pytest.mark.slow  # runs a program
def test_a_file_that_shrinks_while_it_is_uploaded_is_sent_again_once_it_settles(
    srv: InProcessServer, folder: Path
) -> None:
    recording = folder / "meeting.wav"
    # Far larger than the sockets' buffers: the upload is still reading it when the proxy holds.
    with open(recording, "wb") as f:
        f.write(SPEECH.read_bytes())
        f.truncate(64 * 2**20)
    proxy = HoldingProxy(srv.port, hold_after=2**20)
    try:
        argv = [sys.executable, "-m", "whisper_mcp", *quick(proxy.url, folder, "--once")]
        watcher_process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.holding.wait(60), watcher_process.communicate(timeout=30)
        recording.write_bytes(SPEECH.read_bytes())  # shorter than what the upload has read so far
        proxy.release.set()
        out, err = watcher_process.communicate(timeout=120)
    finally:
        proxy.close()
    assert watcher_process.returncode == 0, err
    assert "changed while it was being uploaded" in err
    assert out.splitlines() == [str(folder / "meeting.txt")]
    (job,) = server_jobs(srv)
    assert job["job_id"] == job_id_for("meeting.wav", hashlib.sha256(SPEECH.read_bytes()).hexdigest(), {})
    assert srv.service.queue.get(job["job_id"]).audio_bytes == SPEECH.stat().st_size  # type: ignore[union-attr]
    assert list((srv.storage / "incoming").iterdir()) == []  # the cut-off upload left nothing


@pytest.mark.slow  # runs a program
def test_links_out_of_the_folder_are_skipped_unless_followed(
    srv: InProcessServer, folder: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "speech.wav").write_bytes(SPEECH.read_bytes())
    (elsewhere / "secret.txt").write_text("not for the service\n")
    (folder / "short.wav").write_bytes((FIXTURES / "short.wav").read_bytes())
    (folder / "outside.wav").symlink_to(elsewhere / "speech.wav")
    (folder / "secret.wav").symlink_to(elsewhere / "secret.txt")
    (folder / "inside.wav").symlink_to("short.wav")  # a link within the folder is fine

    result = watch_process(srv.url, folder)
    assert result.returncode == 2, result.stderr
    for name in ("outside.wav", "secret.wav"):
        assert f"{name}: skipped: a symbolic link to a file outside the folder" in result.stderr
    assert sorted(j["filename"] for j in server_jobs(srv)) == ["inside.wav", "short.wav"]
    assert sorted(p.name for p in folder.glob("*.txt")) == ["inside.txt", "short.txt"]
    assert not (folder / STATE_FILE).exists()  # not given up on: a run with the flag takes them

    followed = watch_process(srv.url, folder, "--follow-symlinks")
    assert followed.returncode == 2, followed.stderr  # secret.txt is not audio
    assert "secret.wav: skipped: refused by the service" in followed.stderr
    assert followed.stdout.splitlines() == [str(folder / "outside.txt")]
    assert sorted(j["filename"] for j in server_jobs(srv)) == ["inside.wav", "outside.wav", "short.wav"]


def test_a_file_swapped_for_a_link_out_of_the_folder_is_not_read(
    srv: InProcessServer, folder: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.wav").write_bytes(SPEECH.read_bytes())
    recording = folder / "meeting.wav"
    recording.write_bytes((FIXTURES / "short.wav").read_bytes())
    clock = FakeClock()
    w = watcher(srv, folder, clock=clock, settle=10)
    w.step()  # seen as a regular file, settling
    recording.unlink()
    recording.symlink_to(tmp_path / "secret.wav")
    clock.t += 60
    assert w.run() == 2
    assert "meeting.wav: skipped: a symbolic link to a file outside the folder" in w.stderr.getvalue()  # type: ignore[attr-defined]
    assert server_jobs(srv) == []


def test_many_refusals_write_the_state_file_once(
    srv: InProcessServer, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 stand for the 1,000 that once wrote 169 MB: one write per look, however many.
    for i in range(300):
        (folder / f"notes-{i:04}.bin").write_bytes(b"not audio %d\n" % i)
    writes: list[int] = []
    real = watch_module.write_text_atomic

    def counting(path: Path, text: str, *mode: int) -> None:
        if path.name == STATE_FILE:
            writes.append(len(text.encode()))
        real(path, text, *mode)

    monkeypatch.setattr(watch_module, "write_text_atomic", counting)
    w = watcher(srv, folder, settle=0)
    assert w.run() == 2
    assert w.counts["skipped"] == 300
    state = folder / STATE_FILE
    assert len(json.loads(state.read_text())["given_up"]) == 300
    assert len(writes) == 1 and writes[0] == state.stat().st_size  # one look, one write

    writes.clear()
    again = watcher(srv, folder, settle=0)
    assert again.run() == 0 and again.counts["skipped earlier"] == 300
    assert writes == []  # nothing new to remember


@pytest.mark.slow  # runs a program
def test_names_are_printed_escaped_one_per_line(srv: InProcessServer, folder: Path) -> None:
    names = ["two\nlines.wav", "red\x1b[31m.wav", "back\\slash.wav"]
    for name in names:
        (folder / name).write_bytes((FIXTURES / "short.wav").read_bytes())
    (folder / "junk\x1b]0;title\x07.bin").write_bytes(b"not audio")  # refused: its name is in that report too

    result = watch_process(srv.url, folder)
    assert result.returncode == 2, result.stderr
    assert "junk\\x1b]0;title\\x07.bin: skipped: refused by the service" in result.stderr
    assert "\x07" not in result.stderr
    assert sorted(result.stdout.splitlines()) == [
        f"{folder}/back\\\\slash.txt", f"{folder}/red\\x1b[31m.txt", f"{folder}/two\\nlines.txt",
    ]  # fmt: skip
    assert "\x1b" not in result.stderr and "two\\nlines.wav: uploading" in result.stderr
    assert all(line.startswith(("whisper-mcp", "back", "red", "two", "junk")) for line in result.stderr.splitlines())
    assert sorted(p.name for p in folder.glob("*.txt")) == ["back\\slash.txt", "red\x1b[31m.txt", "two\nlines.txt"]


def test_a_transcript_takes_its_recordings_permissions(srv: InProcessServer, folder: Path) -> None:
    modes = {"shared.wav": 0o644, "group.wav": 0o640, "script.wav": 0o755}
    for name, mode in modes.items():
        (folder / name).write_bytes((FIXTURES / "short.wav").read_bytes())
        (folder / name).chmod(mode)
    assert watcher(srv, folder, settle=0).run() == 0
    written = {name: stat.S_IMODE((folder / name).with_suffix(".txt").stat().st_mode) for name in modes}
    assert written == {"shared.wav": 0o644, "group.wav": 0o640, "script.wav": 0o644}  # never executable
