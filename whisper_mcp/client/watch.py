"""``whisper-mcp watch DIR``: MONITOR.md's workflow for a folder of recordings,
as a program instead of an agent following steps.

Each recording (a regular file in DIR; not hidden, not a transcript, not a
temporary file) goes through:

1. **settling**: it is uploaded only once its size and modification time have
   stayed the same for ``--settle-seconds``, so a file still being written is
   never sent;
2. **upload, once**: its job id is ``<stem>-<12 hex digits>``, the digits a
   SHA-256 of its bytes and of the options that change a transcript (model,
   language, task, prompt). The watcher first asks the service for that id and
   uploads only when the service has no such job; the service also answers a
   re-sent upload of the same audio under the same id with the existing job.
   So a restarted watcher resumes waiting for its jobs and never queues a
   recording twice, with no state of its own;
3. **transcript**: when the job completes, ``<stem>.<format>`` is written next
   to the recording (or into ``--out``) atomically. A recording whose
   transcript exists and is newer than the recording is done: it is not even
   read again. A recording that changes later is transcribed again.

What cannot succeed is reported once and skipped: a file the service refuses
as not audio (or too long, or too large), and a job that failed or was
cancelled (rename the recording to try again: the new name gives a new job
id). Both are remembered in ``.whisper-mcp-watch.json`` in the transcripts'
folder, by path, size and modification time, so a restarted watcher or the
next ``--once`` run does not upload them again; a file that changes is tried
again. That file is written once per look at the folder, not once per file.

No one file stops the watcher: a file that changes while it is uploaded
settles and is sent again; a name that is not valid UTF-8 is sent with U+FFFD
in place of its bad bytes (its transcript keeps the real name); a symbolic
link to a file outside the folder is skipped unless ``--follow-symlinks``
(the files are opened without following links, so a file swapped for a link
is not read either). Names are printed escaped (``console.printable``), one
per line. A transcript gets its recording's read and write permissions.

When the service cannot be reached (or answers 5xx or 429, e.g. while it
restarts), the watcher says so and retries, waiting longer each time (up to
30 s); ``--give-up-after`` ends that with exit 3. Refused credentials end it
at once with exit 4, options the service refuses (unknown model, bad
language) with exit 2.

Torch-free: it talks to the service through ``ServiceClient`` only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from whisper_mcp.client import console
from whisper_mcp.client.console import (
    EXIT_CREDENTIALS,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    PROG,
    ProgressDisplay,
    describe_error,
    printable,
    terminal_safe,
    transcription_options,
)
from whisper_mcp.client.http import FINISHED, ClientError, ServiceClient, upload_name, write_text_atomic
from whisper_mcp.formats import FORMATS

__all__ = ["STATE_FILE", "Watcher", "job_id_for", "run_watch"]

STATE_FILE = ".whisper-mcp-watch.json"
MAX_BACKOFF = 30.0
ONCE_GIVE_UP = 600.0
# Never recordings: transcripts, and the names downloaders, editors and
# recorders give files they are still writing.
SKIPPED_SUFFIXES = frozenset(
    {f".{fmt}" for fmt in FORMATS}
    | {".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", ".lock", ".job"}
)
# Refusals that are about the file itself: report it and go on with the others.
FILE_REFUSALS = frozenset({"invalid_audio", "audio_too_long", "too_large", "conflict"})
# The options that change a transcript, so a different choice is a different job.
ID_OPTIONS = ("model", "language", "task", "initial_prompt", "diarize", "num_speakers", "min_speakers", "max_speakers")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where links are rare and need privileges
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 128 - 13  # the job id pattern allows 128 characters: stem, '-', 12 digits


def job_id_for(name: str, audio_sha256: str, options: Mapping[str, Any]) -> str:
    """``<safe stem>-<12 hex digits>`` for a recording: always the same for the same
    name, bytes and transcript options; it matches ``queue.jobs.JOB_ID``."""
    stem = _UNSAFE.sub("_", Path(name).stem).lstrip("._-")[:_MAX_STEM] or "recording"
    chosen = {k: options[k] for k in ID_OPTIONS if options.get(k) is not None}
    digest = hashlib.sha256(f"{audio_sha256}\n{json.dumps(chosen, sort_keys=True)}".encode()).hexdigest()
    return f"{stem}-{digest[:12]}"


def is_candidate(name: str) -> bool:
    """Could this directory entry be a recording (before asking the service)?"""
    if name.startswith((".", "~")) or name.endswith("~"):
        return False
    return Path(name).suffix.lower() not in SKIPPED_SUFFIXES


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := f.read(1024 * 1024):
        digest.update(block)
    return digest.hexdigest()


def _transcript_mode(st_mode: int) -> int:
    """A recording's read and write permission bits, for its transcript."""
    return stat.S_IMODE(st_mode) & 0o666


class ServiceDown(Exception):
    """The service could not be reached or failed: retry later."""


class Fatal(Exception):
    """Stop watching: retrying cannot help (credentials, options the service refuses)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Recording:
    path: Path
    target: Path
    size: int
    mtime_ns: int
    since: float  # clock time when (size, mtime_ns) was first seen
    display: ProgressDisplay
    mode: int = 0o600  # the transcript's permission bits: the recording's
    # settling -> ready (hashed, job id known) -> pending (job queued) -> done;
    # or skipped / failed; "earlier": skipped by an earlier run (state file).
    state: str = "settling"
    job_id: str | None = None
    noted_growth: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)

    @property
    def final(self) -> bool:
        return self.state in ("done", "skipped", "failed", "earlier")

    @property
    def name(self) -> str:
        """The file's name as printed."""
        return printable(self.path.name)


class Watcher:
    """One folder, one service. ``step()`` looks once at the folder and the jobs;
    ``run()`` repeats it every ``interval`` seconds (until every recording of the
    first look is final, with ``once``). ``clock`` and ``sleep`` are injectable so
    tests can drive the settling without waiting."""

    def __init__(
        self,
        client: ServiceClient,
        folder: Path,
        *,
        fmt: str = "txt",
        out: Path | None = None,
        options: Mapping[str, Any] | None = None,
        settle: float = 5.0,
        interval: float = 2.0,
        once: bool = False,
        give_up_after: float | None = None,
        follow_symlinks: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        token_given: bool = True,
    ) -> None:
        self.client = client
        self.folder = folder
        self.fmt = fmt
        self.out = out
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.settle = settle
        self.interval = interval
        self.once = once
        self.give_up_after = give_up_after if give_up_after is not None or not once else ONCE_GIVE_UP
        self.follow_symlinks = follow_symlinks
        self._root = folder.resolve()
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.clock = clock
        self.sleep = sleep
        self.token_given = token_given
        self.recordings: dict[Path, Recording] = {}
        self.worst = EXIT_OK
        self.counts = {"written": 0, "skipped": 0, "failed": 0, "skipped earlier": 0, "up to date": 0}
        self.state_path = (out or folder) / STATE_FILE
        self.given_up = self._load_state()
        self._state_changed = False
        self._looked = False
        self._active: ProgressDisplay | None = None
        self._down_since: float | None = None
        self._backoff = 0.0

    # -- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Watch until stopped (or, with ``once``, until the first look's recordings
        are final); the exit code."""
        mode = "one pass over" if self.once else "watching"
        self._message(
            f"{mode} {printable(str(self.folder))} (settle {self.settle:g} s) with {self.client.url}"
            + ("" if self.once else "; Ctrl-C to stop")
        )
        while True:
            try:
                self.step()
            except ServiceDown as exc:
                if self._service_down(str(exc)):
                    return EXIT_SERVICE
                continue
            except Fatal as exc:
                self._error(str(exc))
                return exc.code
            if self._down_since is not None:
                self._message("the service answers again")
                self._down_since, self._backoff = None, 0.0
            if self.once and self.finished:
                self._summary()
                return self.worst
            self.sleep(self.interval)

    @property
    def finished(self) -> bool:
        return self._looked and all(r.final for r in self.recordings.values())

    def step(self) -> None:
        """Look at the folder once; upload what has settled (all of it before
        waiting on any: the service batches short recordings queued together);
        check the jobs. Raises ``ServiceDown`` or ``Fatal``."""
        now = self.clock()
        try:
            self._scan(now)
            for rec in self._sorted():
                with self._one_file(rec):
                    if rec.state == "settling" and now - rec.since >= self.settle:
                        self._prepare(rec)
                    if rec.state == "ready":
                        self._start(rec)
            for rec in self._sorted():
                if rec.state == "pending":
                    with self._one_file(rec):
                        self._poll(rec)
        finally:
            self._save_state()  # once per look, however many files were given up on

    @contextmanager
    def _one_file(self, rec: Recording) -> Iterator[None]:
        """Whatever else goes wrong with one file skips that file (the service's
        troubles and fatal errors still end the step)."""
        try:
            yield
        except (ServiceDown, Fatal):
            raise
        except Exception as exc:
            self._skip(rec, f"unexpected error: {type(exc).__name__}: {exc}", remember=False)

    def _sorted(self) -> list[Recording]:
        return [self.recordings[p] for p in sorted(self.recordings)]

    def _service_down(self, reason: str) -> bool:
        """Report, wait, and say whether to give up."""
        now = self.clock()
        if self._down_since is None:
            self._down_since = now
        elif self.give_up_after is not None and now - self._down_since >= self.give_up_after:
            self._error(f"{reason}; gave up after {now - self._down_since:.0f} s (--give-up-after)")
            return True
        self._backoff = min(MAX_BACKOFF, max(self.interval, self._backoff * 2 or self.interval))
        self._message(f"{reason}; retrying in {self._backoff:g} s")
        self.sleep(self._backoff)
        return False

    # -- the folder ---------------------------------------------------------

    def _scan(self, now: float) -> None:
        try:
            entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except OSError as exc:
            raise Fatal(
                f"{printable(str(self.folder))}: cannot read the folder: {exc.strerror or exc}", EXIT_USAGE
            ) from None
        seen: set[Path] = set()
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            path = Path(entry.path)
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # gone since the listing
                continue
            rec = self.recordings.get(path)
            if rec is None:
                if self.once and self._looked:
                    continue  # one pass: only what the first look found
                self._found(path, st.st_size, st.st_mtime_ns, now)
            elif rec.key != (st.st_size, st.st_mtime_ns):
                self._changed(rec, st.st_size, st.st_mtime_ns, now)
            self.recordings[path].mode = _transcript_mode(st.st_mode)
            seen.add(path)
        for path in set(self.recordings) - seen:
            rec = self.recordings.pop(path)
            if not rec.final:
                self._note(rec, "removed before it was transcribed; forgotten")
        self._looked = True

    def _found(self, path: Path, size: int, mtime_ns: int, now: float) -> None:
        target = (self.out or path.parent) / f"{path.stem}.{self.fmt}"
        rec = Recording(path, target, size, mtime_ns, now, ProgressDisplay(self.stderr, printable(path.name)))
        self.recordings[path] = rec
        if self._up_to_date(rec):
            rec.state = "done"
            self.counts["up to date"] += 1
        elif self._remembered(rec) is not None:
            rec.state = "earlier"
            self.counts["skipped earlier"] += 1

    def _changed(self, rec: Recording, size: int, mtime_ns: int, now: float, why: str | None = None) -> None:
        """The file changed: start settling again (a changed recording is
        transcribed again; a job queued for its old content is left to the service)."""
        if rec.state == "earlier":
            self.counts["skipped earlier"] -= 1
        rec.size, rec.mtime_ns, rec.since = size, mtime_ns, now
        rec.state, rec.job_id = "settling", None
        if why is not None:
            self._note(rec, f"{why}; sending it again once it stops changing")
        elif not rec.noted_growth:
            rec.noted_growth = True
            self._note(rec, f"still being written ({console.format_size(size)}); waiting until it stops changing")

    def _changed_in_upload(self, rec: Recording, why: str) -> None:
        """The file changed while it was sent: settle again (if it is gone, the next look forgets it)."""
        try:
            st = rec.path.stat()
        except OSError:
            st = None
        size, mtime_ns = (st.st_size, st.st_mtime_ns) if st else rec.key
        self._changed(rec, size, mtime_ns, self.clock(), why)

    def _up_to_date(self, rec: Recording) -> bool:
        try:
            return rec.target.stat().st_mtime_ns >= rec.mtime_ns
        except OSError:
            return False

    # -- one recording ------------------------------------------------------

    def _prepare(self, rec: Recording) -> None:
        """Settled: read it once for its job id."""
        first = min(p for p, r in self.recordings.items() if r.target == rec.target)
        if first != rec.path:  # a.wav and a.mp3 would both write a.txt: the first name wins
            target = printable(str(rec.target))
            self._skip(rec, f"{printable(first.name)} writes {target} too; rename one of them", remember=False)
            return
        f = self._open(rec)
        if f is None:
            return
        try:
            with f:
                digest = _sha256(f)
                st = os.fstat(f.fileno())
        except OSError as exc:
            self._skip(rec, f"cannot read it: {exc.strerror or exc}", remember=False)
            return
        if (st.st_size, st.st_mtime_ns) != rec.key:  # changed while being read
            self._changed(rec, st.st_size, st.st_mtime_ns, self.clock())
            return
        rec.job_id = job_id_for(rec.path.name, digest, self.options)
        rec.state = "ready"

    def _open(self, rec: Recording) -> BinaryIO | None:
        """The recording, open for reading; None (skipped, said why) when it
        cannot be read or is a link out of the folder. Without
        ``follow_symlinks`` a link is read only where it leads inside the
        folder, and no link is followed in the open itself."""
        source = rec.path
        if not self.follow_symlinks and rec.path.is_symlink():
            source = rec.path.resolve()
            if not source.is_relative_to(self._root):
                self._skip(
                    rec, "a symbolic link to a file outside the folder (--follow-symlinks to send it)", remember=False
                )
                return None
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | (0 if self.follow_symlinks else _NOFOLLOW)
        try:
            return os.fdopen(os.open(source, flags), "rb")
        except OSError as exc:
            self._skip(rec, f"cannot read it: {exc.strerror or exc}", remember=False)
            return None

    def _start(self, rec: Recording) -> None:
        """Resume the recording's job if the service has it; upload it otherwise."""
        assert rec.job_id is not None
        record = self._status(rec)
        if record is None or record.get("status") == "waiting_for_upload":
            record = self._upload(rec)
            if record is None:
                return
        else:
            self._note(rec, f"resuming job {rec.job_id}")
        rec.state = "pending"
        self._update(rec, record)

    def _upload(self, rec: Recording) -> dict[str, Any] | None:
        """Send the recording's bytes as they were hashed; None when it was not
        sent (refused, unreadable, or changed: then it settles again)."""
        f = self._open(rec)
        if f is None:
            return None
        with f:
            before = os.fstat(f.fileno())
            if (before.st_size, before.st_mtime_ns) != rec.key:
                self._changed_in_upload(rec, "changed before it was sent")
                return None
            self._note(rec, f"uploading ({console.format_size(rec.size)}) as job {rec.job_id}")
            try:
                record = self.client.submit_file(f, rec.path.name, job_id=rec.job_id, **self.options)
            except ClientError as exc:
                self._refused(rec, exc)
                return None
            after = os.fstat(f.fileno())
        if (after.st_size, after.st_mtime_ns) != rec.key:  # the job has other bytes than the id says
            self._changed_in_upload(rec, "changed while it was being uploaded")
            return None
        return record

    def _poll(self, rec: Recording) -> None:
        record = self._status(rec)
        if record is None:  # the job is gone (e.g. expired on the service): upload again
            self._note(rec, f"job {rec.job_id} is no longer on the service; uploading again")
            rec.state = "ready"
            return
        self._update(rec, record)

    def _status(self, rec: Recording) -> dict[str, Any] | None:
        assert rec.job_id is not None
        try:
            return self.client.status(rec.job_id, self.fmt)
        except ClientError as exc:
            if exc.status_code == 404:
                return None
            self._raise_for(exc)
            raise Fatal(f"{rec.name}: {self._explain(exc)}", EXIT_USAGE) from None

    def _update(self, rec: Recording, record: dict[str, Any]) -> None:
        status = record.get("status")
        self._show(rec.display).update(record)
        if status not in FINISHED:
            return
        rec.display.done()
        if status != "completed":
            reason = record.get("error") or "no reason given"
            self._error(f"{rec.name}: job {rec.job_id} {status}: {reason} (rename the file to try again)")
            rec.state = "failed"
            self.counts["failed"] += 1
            self.worst = max(self.worst, EXIT_JOB_FAILED)
            self._remember(rec, f"job {rec.job_id} {status}: {reason}")
            return
        try:
            write_text_atomic(rec.target, str(record.get("transcript", "")), rec.mode)
        except OSError as exc:
            self._error(f"{printable(str(rec.target))}: cannot write the transcript: {exc.strerror or exc}")
            rec.state = "failed"
            self.counts["failed"] += 1
            self.worst = max(self.worst, EXIT_USAGE)
            return
        rec.state = "done"
        self.counts["written"] += 1
        print(printable(str(rec.target)), file=self.stdout, flush=True)

    def _refused(self, rec: Recording, exc: ClientError) -> None:
        """An upload the service did not accept: retry, skip the file, or stop."""
        self._raise_for(exc)
        if exc.code == "file_changed":
            self._changed_in_upload(rec, "changed while it was being uploaded")
            return
        if exc.code == "file_unreadable":
            self._skip(rec, exc.message.removeprefix(f"{upload_name(rec.path.name)}: "), remember=False)
            return
        if exc.code in FILE_REFUSALS or exc.status_code == 413:
            self._skip(rec, f"refused by the service: {exc.message}", remember=True)
            return
        # Anything else is about the options, the same for every file.
        raise Fatal(f"{rec.name}: {self._explain(exc)}", EXIT_USAGE)

    def _raise_for(self, exc: ClientError) -> None:
        if exc.status_code in (401, 403):
            raise Fatal(self._explain(exc), EXIT_CREDENTIALS)
        if exc.unreachable or exc.status_code in (407, 408, 429) or (exc.status_code or 0) >= 500:
            raise ServiceDown(self._explain(exc))

    def _skip(self, rec: Recording, reason: str, *, remember: bool) -> None:
        self._error(f"{rec.name}: skipped: {reason}")
        rec.state = "skipped"
        self.counts["skipped"] += 1
        self.worst = max(self.worst, EXIT_USAGE)
        if remember:
            self._remember(rec, reason)

    # -- the state file: what was given up on -------------------------------

    def _load_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            entries = data["given_up"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict) and Path(k).exists()}

    def _remembered(self, rec: Recording) -> dict[str, Any] | None:
        entry = self.given_up.get(str(rec.path.resolve()))
        if entry is not None and (entry.get("size"), entry.get("mtime_ns")) == rec.key:
            return entry
        return None

    def _remember(self, rec: Recording, reason: str) -> None:
        self.given_up[str(rec.path.resolve())] = {
            "size": rec.size, "mtime_ns": rec.mtime_ns, "job_id": rec.job_id, "reason": reason,
        }  # fmt: skip
        self._state_changed = True

    def _save_state(self) -> None:
        """Write what was given up on, if that changed: once per ``step``, since
        the whole file is rewritten each time."""
        if not self._state_changed:
            return
        self._state_changed = False
        try:
            write_text_atomic(self.state_path, json.dumps({"given_up": self.given_up}, indent=1) + "\n")
        except OSError as exc:
            self._error(f"{printable(str(self.state_path))}: cannot write: {exc.strerror or exc}")

    # -- output -------------------------------------------------------------

    def _explain(self, exc: ClientError) -> str:
        return describe_error(exc, token_given=self.token_given)

    def _show(self, display: ProgressDisplay) -> ProgressDisplay:
        """Ends another recording's bar (on a terminal) before this one writes."""
        if self._active is not None and self._active is not display:
            self._active.done()
        self._active = display
        return display

    def _note(self, rec: Recording, text: str) -> None:
        self._show(rec.display).note(text)
        rec.display.done()

    def _message(self, text: str) -> None:
        if self._active is not None:
            self._active.done()
        print(f"{PROG} watch: {terminal_safe(text)}", file=self.stderr, flush=True)

    def _error(self, text: str) -> None:
        if self._active is not None:
            self._active.done()
        print(f"{PROG}: error: {terminal_safe(text)}", file=self.stderr, flush=True)

    def _summary(self) -> None:
        parts = [f"{n} {what}" for what, n in self.counts.items() if n]
        self._message("done: " + (", ".join(parts) if parts else "no recordings"))


def run_watch(args: argparse.Namespace) -> int:
    """``whisper-mcp watch``: check the arguments, then watch."""
    folder = Path(args.folder)
    out = Path(args.out) if args.out else None
    problems = []
    if not folder.is_dir():
        problems.append(f"{printable(str(folder))}: not a folder")
    if args.settle_seconds < 0 or args.interval <= 0:
        problems.append("--settle-seconds must be 0 or more and --interval more than 0")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problems.append(f"--out {printable(str(out))}: cannot create it: {exc.strerror or exc}")
    if problems:
        for problem in problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    options = transcription_options(args)
    with console.client(args) as client:
        watcher = Watcher(
            client,
            folder,
            fmt=args.format,
            out=out,
            options=options,
            settle=args.settle_seconds,
            interval=args.interval,
            once=args.once,
            give_up_after=args.give_up_after,
            follow_symlinks=args.follow_symlinks,
            token_given=bool(console.token(args)),
        )
        try:
            return watcher.run()
        except KeyboardInterrupt:
            ids = " ".join(r.job_id for r in watcher.recordings.values() if r.state == "pending" and r.job_id)
            watcher._error("stopped" + (f"; these jobs keep running on the service: {ids}" if ids else ""))
            return 130
