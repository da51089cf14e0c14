"""``whisper-mcp watch`` as a user runs it (``python -m whisper_mcp watch`` in a
subprocess) against the real server with the real model: a folder of
recordings, one of them still being written, becomes transcripts, once each,
across a crash and restart of the watcher; a drop folder of hostile names,
links and junk stops nothing. And the watch examples of docs/client.md, run
as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from whisper_mcp.client.watch import STATE_FILE

from helpers import FIXTURES, ROOT, ServerProcess, words

pytestmark = pytest.mark.e2e

SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
SHORT_WORDS = {"hello", "world", "testing"}


def our_jobs(server: ServerProcess, prefix: str) -> list[dict]:
    """The shared server's jobs whose id starts with ``prefix``."""
    jobs, offset = [], 0
    while offset is not None:
        page = httpx.get(f"{server.url}/jobs", params={"limit": 500, "offset": offset}, timeout=30).json()
        jobs += [j for j in page["jobs"] if j["job_id"].startswith(prefix)]
        offset = page["next_offset"]
    return jobs


def state_text(folder: Path) -> str:
    """What the watcher of ``folder`` has written of the files it gave up on."""
    try:
        return (folder / STATE_FILE).read_text()
    except FileNotFoundError:
        return ""


def watch(server: ServerProcess, folder: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "whisper_mcp", "watch", str(folder), "--url", server.url, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),
        text=True,
    )


def test_a_folder_becomes_transcripts_once_each_across_a_restart(server: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "we2e-standup.wav").write_bytes((FIXTURES / "speech.wav").read_bytes())
    (folder / "we2e-hello.wav").write_bytes((FIXTURES / "short.wav").read_bytes())
    (folder / "we2e-notes.bin").write_bytes((FIXTURES / "not_audio.bin").read_bytes())
    # A recorder still writing: a few bytes every 0.1 s (far below the settle
    # time) until told to finish, then the rest.
    late = (FIXTURES / "speech.flac").read_bytes()
    (folder / "we2e-late.flac").write_bytes(late[:4096])
    finish = threading.Event()

    def record() -> None:
        position = 4096
        with open(folder / "we2e-late.flac", "ab") as f:
            while position < len(late):
                time.sleep(0.1)
                n = 8192 if finish.is_set() else 64
                f.write(late[position : position + n])
                f.flush()
                position += n

    writer = threading.Thread(target=record, daemon=True)
    writer.start()
    options = ("--settle-seconds", "3", "--interval", "0.2", "--no-cache")
    log = tmp_path / "watch.log"

    first = watch(server, folder, log, *options)
    try:
        deadline = time.monotonic() + 120
        # The two finished files are queued, and the look that refused the
        # third has ended (its refusal is written once per look).
        while len(our_jobs(server, "we2e-")) < 2 or "we2e-notes.bin" not in state_text(folder):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no clean-up
        first.wait(30)
    # The late recording is still being written: not uploaded.
    assert not any(j["job_id"].startswith("we2e-late-") for j in our_jobs(server, "we2e-"))

    second = watch(server, folder, log, *options, "--once")
    finish.set()  # the recorder finishes while the restarted watcher looks on
    out, _ = second.communicate(timeout=300)
    writer.join(30)
    assert second.returncode == 0, log.read_text()
    text = log.read_text()
    # Refused by the first watcher, remembered: reported once, not sent again.
    assert text.count("we2e-notes.bin: skipped: refused by the service") == 1, text
    assert "1 skipped earlier" in text
    # The first watcher uploaded these; the second resumed them (or found them done).
    assert text.count("we2e-standup.wav: uploading") == 1 and text.count("we2e-hello.wav: uploading") == 1, text

    stems = {"we2e-standup": SPEECH_WORDS, "we2e-hello": SHORT_WORDS, "we2e-late": SPEECH_WORDS}
    for stem, expected in stems.items():
        transcript = (folder / f"{stem}.txt").read_text()
        assert expected <= words(transcript), (stem, transcript)
    assert set(out.split()) <= {str(folder / f"{stem}.txt") for stem in stems}
    jobs = our_jobs(server, "we2e-")
    assert sorted(re.sub(r"-[0-9a-f]{12}$", "", j["job_id"]) for j in jobs) == sorted(stems), jobs  # once each
    assert all(j["status"] == "completed" for j in jobs)

    # A third run finds everything done (or remembered as refused) and asks nothing.
    third = watch(server, folder, log, *options, "--once")
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and out == "", log.read_text()
    assert len(our_jobs(server, "we2e-")) == 3


def documented_watch_examples() -> list[str]:
    section = (ROOT / "docs" / "client.md").read_text().split("## Watching a folder", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("whisper-mcp watch")]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_the_documented_watch_examples_run_as_written(server: ServerProcess, tmp_path: Path) -> None:
    continuous, once = documented_watch_examples()
    (tmp_path / "recordings").mkdir()
    for name in ("speech.mp3", "short.wav"):
        (tmp_path / "recordings" / name).write_bytes((FIXTURES / name).read_bytes())
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WHISPER_MCP_URL": server.url,
    }

    # The long-running one: until its transcripts are there, then Ctrl-C.
    # Started as from a shell: SIGINT at its default, not blocked, whatever
    # the test process inherited.
    proc = subprocess.Popen(
        shlex.split(continuous),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    targets = [tmp_path / "transcripts" / "speech.txt", tmp_path / "transcripts" / "short.txt"]
    deadline = time.monotonic() + 180
    while not all(t.exists() for t in targets):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        state = Path(f"/proc/{proc.pid}/status").read_text()
        stack = Path(f"/proc/{proc.pid}/wchan").read_text()
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no exit 30 s after SIGINT; wchan {stack}; {state}; stderr: {err}") from None
    assert proc.returncode == 130, err
    assert sorted(out.split()) == sorted(str(Path("transcripts") / t.name) for t in targets)
    assert SPEECH_WORDS <= words(targets[0].read_text()) and SHORT_WORDS <= words(targets[1].read_text())

    # The cron one: transcripts next to the recordings, then it exits.
    result = subprocess.run(shlex.split(once), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert SPEECH_WORDS <= words((tmp_path / "recordings" / "speech.txt").read_text())
    assert (tmp_path / "recordings" / "short.txt").exists()


def test_a_hostile_drop_folder_stops_nothing(server: ServerProcess, tmp_path: Path) -> None:
    """Names that are not UTF-8 or carry control characters, links out of the
    folder, and a pile of files that are not audio: one pass of the real
    watcher transcribes every recording, skips the rest, and says so."""
    folder, private = tmp_path / "drop", tmp_path / "private"
    folder.mkdir()
    private.mkdir()
    short = (FIXTURES / "short.wav").read_bytes()
    (private / "secret.wav").write_bytes(short)
    names = [b"wh2e-bad\xff.wav", b"wh2e-two\nlines.wav", b"wh2e-red\x1b[31m.wav"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(short)
    (folder / "wh2e-shared.wav").write_bytes((FIXTURES / "speech.wav").read_bytes())
    (folder / "wh2e-shared.wav").chmod(0o644)
    (folder / "wh2e-link.wav").symlink_to(private / "secret.wav")
    for i in range(50):
        (folder / f"wh2e-junk-{i:02}.bin").write_bytes(b"not audio %d\n" % i)

    result = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "watch", str(folder), "--url", server.url, "--once",
         "--settle-seconds", "0", "--interval", "0.2", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # the link and the junk were skipped; nothing crashed
    printed = [
        f"{folder}/{stem}.txt" for stem in ("wh2e-bad\\xff", "wh2e-red\\x1b[31m", "wh2e-shared", "wh2e-two\\nlines")
    ]
    assert sorted(result.stdout.splitlines()) == printed
    assert "\x1b" not in result.stderr and "wh2e-link.wav: skipped: a symbolic link to a file outside" in result.stderr
    assert result.stderr.count("skipped: refused by the service") == 50
    for name in names:
        transcript = os.path.join(os.fsencode(folder), name.replace(b".wav", b".txt"))
        with open(transcript, encoding="utf-8") as f:
            assert SHORT_WORDS <= words(f.read()), name
    assert SPEECH_WORDS <= words((folder / "wh2e-shared.txt").read_text())
    assert (folder / "wh2e-shared.txt").stat().st_mode & 0o777 == 0o644
    assert not (folder / "wh2e-link.txt").exists()
    assert len(our_jobs(server, "wh2e-")) == 4
