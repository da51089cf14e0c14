"""What the client commands (``cli``, ``watch``) share: the program name and
environment variables, exit codes, error descriptions, the client factory and
the progress display. It imports neither command module, so both import it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from whisper_mcp.client.http import DEFAULT_URL, ClientError, ServiceClient

PROG = "whisper-mcp"
URL_ENV = "WHISPER_MCP_URL"
TOKEN_ENV = "WHISPER_MCP_TOKEN"

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3
EXIT_CREDENTIALS = 4

EXIT_CODES_HELP = """exit codes:
  0  everything asked for was done
  1  a transcription job failed or was cancelled
  2  bad usage, or input the service refused (missing file, not audio, unknown model)
  3  service unreachable, timed out or failing (HTTP 5xx, 429)
  4  credentials refused (HTTP 401/403): set --token or WHISPER_MCP_TOKEN"""


# -- errors and exit codes -----------------------------------------------------


def error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def exit_code(exc: ClientError) -> int:
    """2 when the service refused what was sent (or the file could not be sent
    whole); 4 when it refused the credentials; 3 when it could not be reached,
    was overloaded or failed itself."""
    status = exc.status_code
    if status is None and exc.code is not None:  # file_changed, file_unreadable
        return EXIT_USAGE
    if status in (401, 403):
        return EXIT_CREDENTIALS
    if status is not None and 400 <= status < 500 and status not in (407, 408, 429):
        return EXIT_USAGE
    return EXIT_SERVICE


def describe(exc: ClientError, args: argparse.Namespace) -> str:
    return describe_error(exc, token_given=bool(token(args)))


def describe_error(exc: ClientError, *, token_given: bool) -> str:
    """The error's message, with a hint where the fix is a flag of these commands."""
    if exc.status_code in (401, 403):
        hint = "" if token_given else f" (no token given: use --token or {TOKEN_ENV})"
        return f"{exc.message}{hint}"
    if exc.unreachable and "cannot reach" in exc.message:
        return f"{exc.message} (is it running? set --url or {URL_ENV})"
    return exc.message


def transcription_options(args: argparse.Namespace) -> dict[str, Any]:
    """The form fields of ``POST /transcribe`` that the commands' transcription options set (None: not given)."""
    return {
        "model": args.model,
        "language": args.language,
        "task": args.task,
        "initial_prompt": args.prompt,
        "vad_filter": args.vad_filter,
        "hotwords": args.hotwords,
        "priority": args.priority,
        "cache": args.cache,
        "diarize": args.diarize,
        "num_speakers": args.num_speakers,
        "min_speakers": args.min_speakers,
        "max_speakers": args.max_speakers,
    }


# -- connection ----------------------------------------------------------------


def url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get(URL_ENV) or DEFAULT_URL


def token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def client(args: argparse.Namespace) -> ServiceClient:
    return ServiceClient(url(args), token=token(args), timeout=args.http_timeout)


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(name: str) -> str:
    """A file name as it is printed: one line, nothing a terminal acts on.
    Control and other unprintable characters become escapes (``\\n``,
    ``\\x1b``, ``\\u202e``), a byte that was not valid UTF-8 becomes
    ``\\xNN``, and a backslash ``\\\\``, so every name prints one way."""
    return "".join(_escape(ch) if ch == "\\" or not ch.isprintable() else ch for ch in name)


def terminal_safe(text: str) -> str:
    """A line of output with control characters escaped as ``printable`` does,
    its backslashes left alone (names in it are escaped already)."""
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# -- progress ------------------------------------------------------------------


class ProgressDisplay:
    """Progress of one job on a text stream: a bar redrawn in place with ``\\r`` on
    a terminal, otherwise one line each time the status changes."""

    WIDTH = 24

    def __init__(self, stream: TextIO, label: str, *, tty: bool | None = None, status: str | None = None) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.last_status = status
        self._drawn = 0

    def note(self, text: str) -> None:
        """A transient message: in place on a terminal, a line otherwise."""
        if self.tty:
            self._draw(f"{self.label}  {text}")
        else:
            self._line(f"{self.label.rstrip()}: {text}")

    def update(self, record: dict[str, Any]) -> None:
        status = str(record.get("status", "?"))
        if self.tty:
            self._draw(self._bar(record, status))
        elif status != self.last_status:
            self._line(f"{self.label.rstrip()}: {self._summary(record, status)}")
        self.last_status = status

    def done(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _bar(self, record: dict[str, Any], status: str) -> str:
        progress = float(record.get("progress") or 0.0)
        if status == "completed":
            progress = 1.0
        filled = int(round(progress * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"{self.label} [{bar}] {progress * 100:3.0f}% {self._summary(record, status)}"

    def _summary(self, record: dict[str, Any], status: str) -> str:
        if status == "queued":
            position = record.get("queue_position")
            return "queued" + (f" (position {position})" if position else "")
        if status == "processing":
            eta = record.get("eta_seconds")
            return "processing" + (f", about {eta:.0f} s left" if isinstance(eta, (int, float)) else "")
        if status == "completed":
            if record.get("cached"):
                return "completed (cached transcript)"
            audio, started, finished = record.get("audio_seconds"), record.get("started_at"), record.get("finished_at")
            if (
                isinstance(audio, int | float)
                and isinstance(started, int | float)
                and isinstance(finished, int | float)
            ):
                return f"completed ({audio:.1f} s of audio in {finished - started:.1f} s)"
            return "completed"
        if status in ("failed", "cancelled"):
            return f"{status}: {record.get('error') or 'no reason given'}"
        return status

    def _draw(self, text: str) -> None:
        text = terminal_safe(text)
        pad = max(0, self._drawn - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._drawn = len(text)

    def _line(self, text: str) -> None:
        self.stream.write(terminal_safe(text) + "\n")
        self.stream.flush()
