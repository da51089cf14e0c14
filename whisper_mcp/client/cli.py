"""Client commands for a running service: ``transcribe``, ``status``, ``jobs``, ``watch``, ``live``.

``add_client_commands(sub)`` adds them to an argparse sub-parser set and
``run_client_command(args)`` runs the parsed one. ``python -m
whisper_mcp.client.cli`` runs them standalone.

Exit codes, for scripts:

- 0: everything asked for was done;
- 1: a transcription job failed or was cancelled (the others were still written);
- 2: usage or input error: bad arguments, a missing file, or a request the
  service refused because of what was sent (not audio, unknown model or job, ...);
- 3: the service could not be reached, timed out, or answered with a server
  error (or 429 too busy);
- 4: the service refused the credentials (HTTP 401 or 403: no token, or a
  wrong one).

Errors go to stderr as ``whisper-mcp: error: ...``; stdout carries only
results (written paths, job ids, JSON, the job table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_mcp.client import console, live
from whisper_mcp.client.console import (
    EXIT_CODES_HELP,
    EXIT_CREDENTIALS,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    PROG,
    TOKEN_ENV,
    URL_ENV,
    ProgressDisplay,
    transcription_options,
)
from whisper_mcp.client.http import DEFAULT_URL, ClientError, write_text_atomic
from whisper_mcp.client.watch import run_watch
from whisper_mcp.formats import FORMATS
from whisper_mcp.queue.jobs import JOB_ID, JOB_STATUSES

CLIENT_COMMANDS = ("transcribe", "status", "jobs", "watch", "live")

__all__ = ["CLIENT_COMMANDS", "add_client_commands", "main", "run_client_command"]


# -- parsers -------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"service base URL (env {URL_ENV}, default {DEFAULT_URL})")
    common.add_argument("--token", help=f"bearer token for the service (env {TOKEN_ENV})")
    common.add_argument(
        "--http-timeout", type=float, default=30.0, metavar="SECONDS",
        help="timeout of each HTTP request, default 30",
    )  # fmt: skip
    return common


def _transcription_options() -> argparse.ArgumentParser:
    """The options of a transcription, shared by ``transcribe`` and ``watch``."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--format", choices=FORMATS, default="txt", help="transcript format to write, default txt")
    opts.add_argument(
        "--out", metavar="DIR", help="folder for the transcripts (created if missing); default: next to each recording"
    )
    opts.add_argument("--model", help="model name, e.g. tiny.en or base (default: the service's)")
    opts.add_argument(
        "--language", help="language code or name, or auto (default: English-only models use en, others detect)"
    )
    opts.add_argument(
        "--task", choices=("transcribe", "translate"), help="translate into English (multilingual models)"
    )
    opts.add_argument("--prompt", metavar="TEXT", help="initial prompt: names and terms the recording uses")
    opts.add_argument(
        "--vad-filter", action=argparse.BooleanOptionalAction, default=None,
        help="decode only the speech voice-activity detection finds, skipping silence (default: the service's)",
    )  # fmt: skip
    opts.add_argument(
        "--hotwords", metavar="TEXT", help="words or names to favour while decoding (ctranslate2 engine only)"
    )
    opts.add_argument("--priority", choices=("urgent", "normal", "low"), help="queue priority, default normal")
    opts.add_argument(
        "--diarize", action="store_true", default=None,
        help="label who spoke when (SPEAKER_00, ...) in every format; slower",
    )  # fmt: skip
    for hint, what in (("num", "exactly"), ("min", "at least"), ("max", "at most")):
        opts.add_argument(f"--{hint}-speakers", type=int, metavar="N", help=f"with --diarize: {what} N speakers (1-15)")
    opts.add_argument(
        "--cache", action=argparse.BooleanOptionalAction, default=None,
        help="reuse an earlier transcript of the same audio, model and options (the service's default); "
        "--no-cache transcribes again",
    )  # fmt: skip
    return opts


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``transcribe``, ``status``, ``jobs``, ``watch`` and ``live`` to ``sub``; each sets
    ``args.client_handler``, which ``run_client_command`` calls."""
    common = _connection_options()
    transcription = _transcription_options()
    raw = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser(
        "transcribe",
        parents=[common, transcription],
        help="upload recordings to a running service and write their transcripts",
        description="Upload each FILE to the service, show its progress on stderr, write "
        "<stem>.<format> next to it (or into --out) and print each written path on stdout.",
        epilog=EXIT_CODES_HELP,
        formatter_class=raw,
    )
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, mp3, flac, ogg/opus, m4a, ...)")
    t.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True,
        help="wait for the transcripts and write them (default); --no-wait prints the job ids and returns",
    )  # fmt: skip
    t.add_argument(
        "--job-id", metavar="ID",
        help="the job's id (one FILE only; letters, digits, '.', '_', '-'; up to 128): running again with "
        "the same id and file answers with that job instead of queueing the file twice",
    )  # fmt: skip
    t.set_defaults(client_handler=_cmd_transcribe)

    s = sub.add_parser(
        "status",
        parents=[common],
        help="one job's record as JSON, or the service's health without JOB",
        description="Print a job's record as JSON, or GET /health when no JOB is given "
        "(exit 3 when the service reports an error).",
        epilog=EXIT_CODES_HELP,
        formatter_class=raw,
    )
    s.add_argument("job", nargs="?", metavar="JOB", help="job id")
    s.set_defaults(client_handler=_cmd_status)

    j = sub.add_parser(
        "jobs", parents=[common], help="list the service's jobs as a table", epilog=EXIT_CODES_HELP, formatter_class=raw
    )
    j.add_argument(
        "--status", dest="job_status", choices=JOB_STATUSES,
        help="only jobs in this state",
    )  # fmt: skip
    j.add_argument("--limit", type=int, default=50, help="at most this many rows (1-500), default 50")
    j.add_argument("--offset", type=int, default=0, help="skip this many jobs, default 0")
    j.set_defaults(client_handler=_cmd_jobs)

    w = sub.add_parser(
        "watch",
        parents=[common, transcription],
        help="transcribe every recording that appears in a folder",
        description="Watch DIR: upload each recording once it has stopped changing (its size and "
        "modification time the same for --settle-seconds), with a job id made from its name and "
        "content, and write <stem>.<format> next to it (or into --out). A recording whose "
        "transcript is already there (newer than the recording) is left alone, and a restarted "
        "watcher resumes the jobs it queued instead of queueing them again. Files the service "
        "refuses as not audio are reported once and skipped (remembered in "
        ".whisper-mcp-watch.json in the transcripts' folder). While the service is unreachable it "
        "retries, waiting longer each time (up to 30 s). Symbolic links to files outside DIR are "
        "skipped unless --follow-symlinks. Progress goes to stderr, each written transcript's path "
        "to stdout (names escaped: one per line).",
        epilog=EXIT_CODES_HELP
        + "\n\nWithout --once, watch runs until stopped (Ctrl-C: exit 130) and exits early only for 2, 3 "
        "(--give-up-after) or 4. With --once: 0 when every recording of the pass has its transcript, "
        "1 when a job failed, 2 when a file was refused or skipped.",
        formatter_class=raw,
    )
    w.add_argument("folder", metavar="DIR", help="the folder of recordings (not its subfolders)")
    w.add_argument(
        "--once", action="store_true",
        help="one pass, for cron: transcribe the recordings in DIR now (waiting for those still being "
        "written) and exit",
    )  # fmt: skip
    w.add_argument(
        "--settle-seconds", type=float, default=5.0, metavar="SECONDS",
        help="upload a recording once its size and modification time have stayed the same this long, default 5",
    )  # fmt: skip
    w.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS",
        help="how often to look at the folder and at the queued jobs, default 2",
    )  # fmt: skip
    w.add_argument(
        "--give-up-after", type=float, metavar="SECONDS",
        help="exit 3 once the service has been unreachable this long (default: keep retrying; with --once, 600)",
    )  # fmt: skip
    w.add_argument(
        "--follow-symlinks", action="store_true",
        help="also transcribe symbolic links to files outside DIR (by default they are skipped)",
    )  # fmt: skip
    w.set_defaults(client_handler=_cmd_watch)

    live.add_parser(sub, common)


def run_client_command(args: argparse.Namespace) -> int:
    """Run a command parsed by a parser that ``add_client_commands`` set up; returns the exit code."""
    handler = getattr(args, "client_handler", None)
    if handler is None:
        console.error(f"not a client command: {getattr(args, 'command', None)!r}")
        return EXIT_USAGE
    try:
        return handler(args)
    except ClientError as exc:
        console.error(console.describe(exc, args))
        return console.exit_code(exc)


# -- transcribe ----------------------------------------------------------------


@dataclass
class _Item:
    source: Path
    label: str
    target: Path | None
    job: dict[str, Any] | None = None


def _plan(args: argparse.Namespace) -> list[_Item] | None:
    """Check every input before uploading anything; None after a usage error."""
    sources = [Path(name) for name in args.files]
    problems = []
    if args.job_id is not None:
        if len(sources) != 1:
            problems.append("--job-id names one job: give one FILE")
        if not JOB_ID.match(args.job_id):
            problems.append(
                f"--job-id {args.job_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
    for source in sources:
        if not source.exists():
            problems.append(f"{source}: no such file")
        elif not source.is_file():
            problems.append(f"{source}: not a regular file")
        elif not os.access(source, os.R_OK):
            problems.append(f"{source}: not readable")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        problems.append(f"--out {out_dir}: exists and is not a folder")
    if problems:
        for problem in problems:
            console.error(problem)
        return None

    items = []
    targets: dict[Path, Path] = {}
    width = max(len(str(s)) for s in sources)
    for source in sources:
        target = None
        if args.wait:
            target = (out_dir or source.parent) / f"{source.stem}.{args.format}"
            key = target.resolve()
            if key == source.resolve():
                problems.append(f"{source}: the transcript {target} would overwrite the recording; use --out")
            elif key in targets:
                problems.append(f"{targets[key]} and {source} would both write {target}; use separate runs or --out")
            targets[key] = source
        items.append(_Item(source, str(source).ljust(width), target))
    if problems:
        for problem in problems:
            console.error(problem)
        return None
    if out_dir is not None and args.wait:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            console.error(f"--out {out_dir}: cannot create it: {exc.strerror or exc}")
            return None
    return items


def _cmd_transcribe(args: argparse.Namespace) -> int:
    items = _plan(args)
    if items is None:
        return EXIT_USAGE
    options = {**transcription_options(args), "job_id": args.job_id}
    worst = EXIT_OK
    err = sys.stderr
    submitted: list[_Item] = []
    try:
        with console.client(args) as client:
            # Upload everything first: the service works on the first file while the
            # others upload, and every job is queued even if this command is stopped.
            for item in items:
                display = ProgressDisplay(err, item.label)
                display.note(f"uploading ({console.format_size(item.source.stat().st_size)})")
                try:
                    item.job = client.submit(item.source, **options)
                except ClientError as exc:
                    display.done()
                    if exc.unreachable or console.exit_code(exc) in (EXIT_SERVICE, EXIT_CREDENTIALS):
                        raise
                    console.error(f"{item.source}: {exc.message}")
                    worst = max(worst, console.exit_code(exc))
                    continue
                submitted.append(item)
                cached = " (cached transcript)" if item.job.get("cached") else ""
                display.note(f"job {item.job['job_id']} {item.job.get('status', 'queued')}{cached}")
                display.done()
                if not args.wait:
                    print(item.job["job_id"], flush=True)

            if not args.wait:
                return worst

            for item in submitted:
                assert item.job is not None and item.target is not None
                job_id = item.job["job_id"]
                display = ProgressDisplay(err, item.label, status=item.job.get("status"))
                try:
                    record = client.wait(job_id, on_update=display.update)
                finally:
                    display.done()
                if record["status"] != "completed":
                    reason = record.get("error") or "no reason given"
                    console.error(f"{item.source}: job {job_id} {record['status']}: {reason}")
                    worst = max(worst, EXIT_JOB_FAILED)
                    continue
                text = client.download(job_id, args.format)
                try:
                    write_text_atomic(item.target, text)
                except OSError as exc:
                    console.error(f"{item.target}: cannot write the transcript: {exc.strerror or exc}")
                    worst = max(worst, EXIT_USAGE)
                    continue
                print(item.target, flush=True)
    except KeyboardInterrupt:
        ids = " ".join(i.job["job_id"] for i in submitted if i.job)
        console.error("interrupted" + (f"; the jobs keep running on the service: {ids}" if ids else ""))
        return 130
    return worst


# -- watch ---------------------------------------------------------------------


def _cmd_watch(args: argparse.Namespace) -> int:

    return run_watch(args)


# -- status and jobs -----------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with console.client(args) as client:
        if args.job:
            record = client.status(args.job)
            code = EXIT_OK
        else:
            record = client.health()
            code = EXIT_OK if record.get("status") == "ok" else EXIT_SERVICE
    print(json.dumps(record, indent=2, ensure_ascii=False))
    return code


def _cmd_jobs(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500 or args.offset < 0:
        console.error("--limit must be from 1 to 500 and --offset 0 or more")
        return EXIT_USAGE
    with console.client(args) as client:
        page = client.jobs(args.job_status, args.limit, args.offset)
    rows = [("JOB_ID", "STATUS", "PROGRESS", "MODEL", "PRIORITY", "AUDIO", "CREATED", "FILE")]
    for job in page.get("jobs", []):
        status = str(job.get("status", ""))
        if status == "queued" and job.get("queue_position"):
            status = f"queued #{job['queue_position']}"
        created = job.get("created_at")
        audio = job.get("audio_seconds")
        rows.append(
            (
                str(job.get("job_id", "")),
                status,
                f"{float(job.get('progress') or 0) * 100:.0f}%",
                str(job.get("model") or ""),
                str(job.get("priority") or ""),
                f"{audio:.1f}s" if isinstance(audio, (int, float)) else "",
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
                if isinstance(created, (int, float))
                else "",
                str(job.get("filename") or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    total = page.get("total", len(rows) - 1)
    shown = len(rows) - 1
    more = page.get("next_offset")
    footer = f"{shown} of {total} job(s)"
    if more is not None:
        footer += f"; more with --offset {more}"
    print(footer, file=sys.stderr)
    return EXIT_OK


# -- standalone ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Client of a running whisper-mcp service")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
