"""``whisper-mcp live``: stream a recording, or raw PCM from standard input,
to the service's realtime transcription WebSocket, at the pace it was spoken.

It speaks OpenAI's Realtime transcription protocol over
``/v1/realtime?intent=transcription``: one ``session.update``, the audio as
``input_audio_buffer.append`` events (16-bit PCM, mono, 24 kHz, base64), and
a ``commit`` at the end; the server answers with
``conversation.item.input_audio_transcription.delta`` events as words are
heard and one ``.completed`` per utterance. On a terminal the deltas appear
as they come and each utterance's completed text replaces them on its line;
otherwise only completed utterances are printed, one a line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from whisper_mcp.client import console
from whisper_mcp.client.console import EXIT_CREDENTIALS, EXIT_JOB_FAILED, EXIT_OK, EXIT_SERVICE, EXIT_USAGE

RATE = 24000
SAMPLE_BYTES = 2
CHUNK_SECONDS = 0.1
REALTIME_PATH = "/v1/realtime?intent=transcription"
# How long after the last audio the service may take to finish the last utterance.
FINISH_SECONDS = 120.0
# An explicit commit with nothing left in the buffer (server VAD took it all).
EMPTY_COMMIT = "input_audio_buffer_commit_empty"
EXIT_INTERRUPTED = 130  # a second Ctrl-C, as a shell reports SIGINT
# Refusals that say "not now" rather than "not this": exit 3, as for HTTP 429.
BUSY = ("session_limit_reached",)


class LiveError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# -- arguments -------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "live",
        parents=[common],
        help="stream a recording (or raw PCM on stdin) to the realtime transcription socket",
        description="Stream FILE to the service's realtime transcription WebSocket "
        "(/v1/realtime?intent=transcription) at the pace it was recorded, and print what it hears: on a "
        "terminal, words as they come, each utterance's final text replacing them; otherwise each "
        "completed utterance on its own line. FILE is any format the client's PyAV decodes; '-' reads raw "
        "16-bit little-endian PCM, mono, 24 kHz, from standard input (e.g. from a microphone: "
        "arecord -f S16_LE -c 1 -r 24000 -t raw | whisper-mcp live -).",
        epilog=console.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a recording, or - for raw PCM16 mono 24 kHz on standard input")
    p.add_argument("--model", help="model name, e.g. tiny.en or base (default: the service's)")
    p.add_argument("--language", help="language code, e.g. en (default: English-only models use en, others detect)")
    p.add_argument("--prompt", metavar="TEXT", help="names and terms the speech uses")
    p.add_argument(
        "--speed", type=float, default=1.0, metavar="X",
        help="send the audio X times faster than it plays, default 1 (real time); 0 sends it as fast as possible",
    )  # fmt: skip
    p.add_argument(
        "--no-vad", dest="vad", action="store_false",
        help="no server voice-activity detection: the whole stream is one utterance, transcribed at its end",
    )  # fmt: skip
    p.add_argument(
        "--keep-audio", action="store_true",
        help="the service keeps the session's audio with its job (store=audio), to download as a WAV "
        "(GET /download/JOB_ID?format=wav) and, say, diarize afterwards",
    )  # fmt: skip
    p.set_defaults(client_handler=run_live)


def check_args(args: argparse.Namespace) -> list[str]:
    problems = []
    if not (args.speed >= 0 and args.speed < float("inf")):
        problems.append(f"--speed {args.speed}: give 0 (as fast as possible) or a positive factor")
    if args.file != "-":
        path = Path(args.file)
        if not path.exists():
            problems.append(f"{args.file}: no such file")
        elif not path.is_file():
            problems.append(f"{args.file}: not a regular file")
    return problems


def session_update(args: argparse.Namespace) -> dict[str, Any]:
    """The ``session.update`` that opens the stream, in OpenAI's shape."""
    transcription = {
        key: value
        for key, value in (("model", args.model), ("language", args.language), ("prompt", args.prompt))
        if value
    }
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": RATE},
        "turn_detection": {"type": "server_vad"} if args.vad else None,
    }
    if transcription:
        audio_input["transcription"] = transcription
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}


def socket_url(base: str, *, keep_audio: bool = False) -> str:
    """``http://host:port`` -> ``ws://host:port/v1/realtime?intent=transcription`` (https -> wss);
    ``keep_audio``: with ``&store=audio``."""
    parts = urlsplit(base.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise LiveError(f"--url {base!r}: give the service's http:// or https:// address", EXIT_USAGE)
    path, _, query = REALTIME_PATH.partition("?")
    if keep_audio:
        query += "&store=audio"
    return urlunsplit((scheme, parts.netloc, parts.path + path, query, ""))


# -- audio -------------------------------------------------------------------------


def file_chunks(path: Path, seconds: float = CHUNK_SECONDS) -> Iterator[bytes]:
    """A recording decoded (PyAV) to 16-bit PCM, mono, 24 kHz, in pieces of ``seconds``."""
    import av  # only for a file; '-' needs no decoder

    size = int(RATE * seconds) * SAMPLE_BYTES
    pending = bytearray()
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise LiveError(f"{path}: has no audio stream", EXIT_USAGE)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pending += out.to_ndarray().tobytes()
                while len(pending) >= size:
                    yield bytes(pending[:size])
                    del pending[:size]
            for out in resampler.resample(None):
                pending += out.to_ndarray().tobytes()
    except av.FFmpegError as exc:
        raise LiveError(f"{path}: cannot be decoded as audio ({exc})", EXIT_USAGE) from exc
    while pending:
        yield bytes(pending[:size])
        del pending[:size]


def stream_chunks(stream: BinaryIO, seconds: float = CHUNK_SECONDS) -> Iterator[bytes]:
    """Raw PCM16 from a byte stream in pieces of ``seconds`` (the last may be shorter;
    a stray odd byte at the very end is dropped)."""
    size = int(RATE * seconds) * SAMPLE_BYTES
    pending = b""
    while True:
        data = stream.read(size - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= size:
            yield pending
            pending = b""
    pending = pending[: len(pending) - len(pending) % SAMPLE_BYTES]
    if pending:
        yield pending


async def read_ahead(chunks: Iterable[bytes], depth: int = 10) -> AsyncIterator[bytes]:
    """``chunks``, produced on a thread of their own up to ``depth`` ahead:
    decoding and reading standard input block, and the loop must go on
    printing what the service sends. A daemon thread, so a read that never
    returns (a pipe from a program that ignores Ctrl-C) cannot hold up the exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(depth)

    def hand(item: bytes | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            for chunk in chunks:
                room.acquire()
                hand(chunk)
            hand(None)
        except BaseException as exc:  # handed to the loop, raised there
            hand(exc)

    threading.Thread(target=produce, name="live-audio", daemon=True).start()
    while (item := await queue.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        room.release()
        yield item


async def paced(
    chunks: Iterable[bytes],
    speed: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AsyncIterator[bytes]:
    """Each chunk no sooner than the audio before it would have played at
    ``speed`` (0: at once). Pacing is against the start, so delays do not add up."""
    start = clock()
    sent_seconds = 0.0
    async for chunk in read_ahead(chunks):
        if speed > 0:
            due = start + sent_seconds / speed
            wait = due - clock()
            if wait > 0:
                await sleep(wait)
        yield chunk
        sent_seconds += len(chunk) / (RATE * SAMPLE_BYTES)


# -- the stream --------------------------------------------------------------------------


@dataclass
class Printer:
    """Deltas in place on a terminal, completed utterances one a line."""

    out: TextIO
    tty: bool
    _partial: str = ""
    _item: str | None = None

    def delta(self, item: str, text: str) -> None:
        if not self.tty:
            return
        if item != self._item:
            self._end_partial()
            self._item = item
        self._partial += text
        self.out.write("\r\x1b[2K" + console.terminal_safe(self._partial))
        self.out.flush()

    def completed(self, item: str, text: str) -> None:
        if self.tty and item == self._item:
            self.out.write("\r\x1b[2K")
            self._partial, self._item = "", None
        else:
            self._end_partial()
        text = text.strip()
        if text:
            self.out.write(console.terminal_safe(text) + "\n")
        self.out.flush()

    def _end_partial(self) -> None:
        if self._partial:
            self.out.write("\n")
            self._partial, self._item = "", None


@dataclass
class _State:
    pending: set[str] = field(default_factory=set)  # committed items not yet transcribed
    failed: int = 0
    completed: int = 0
    sent_all: bool = False
    interrupted: bool = False  # Ctrl-C stopped the audio
    final_commit_done: bool = False  # the server has answered the commit at the end
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.final_commit_done and not self.pending:
            self.finished.set()


async def stream(
    url: str,
    token: str | None,
    chunks: Iterable[bytes],
    args: argparse.Namespace,
    printer: Printer,
    *,
    open_timeout: float = 30.0,
    finish_seconds: float = FINISH_SECONDS,
) -> int:
    """Stream ``chunks`` and print what comes back; the exit code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        socket = await websockets.connect(url, additional_headers=headers, open_timeout=open_timeout, max_size=2**24)
    except InvalidStatus as exc:
        raise _refused(exc) from None
    except InvalidURI as exc:
        raise LiveError(f"--url: {exc}", EXIT_USAGE) from None
    except (OSError, TimeoutError) as exc:
        raise LiveError(f"cannot reach the service at {url} ({exc})", EXIT_SERVICE) from None
    state = _State()
    async with socket:
        await socket.send(json.dumps(session_update(args)))
        receiver: asyncio.Task[Any] = asyncio.create_task(_receive(socket, state, printer))
        sender = asyncio.create_task(_send(socket, chunks, args.speed, state))
        stop_on_interrupt(sender, state)
        try:
            # Until the audio is all sent, or either side fails.
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is sender and task.cancelled() and state.interrupted:
                    # Ctrl-C: what was sent is the last utterance.
                    state.sent_all = True
                    await _finish(socket)
                else:
                    task.result()
            # Then until the last utterance is transcribed.
            waiter = asyncio.create_task(state.finished.wait())
            done, _ = await asyncio.wait(
                {waiter, receiver}, timeout=finish_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if receiver in done:
                receiver.result()
            if not state.finished.is_set():
                raise LiveError(
                    f"the service did not finish the last utterance within {finish_seconds:.0f} s of the end "
                    "of the audio",
                    EXIT_SERVICE,
                )
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
    return EXIT_JOB_FAILED if state.failed else EXIT_OK


def stop_on_interrupt(sender: asyncio.Task[Any], state: _State) -> None:
    """The first Ctrl-C stops the audio and lets the last words finish; the
    next one (Python's own handler again) quits at once."""
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        loop.remove_signal_handler(signal.SIGINT)
        state.interrupted = True
        sender.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, a thread)
        loop.add_signal_handler(signal.SIGINT, interrupted)


async def _send(socket: ClientConnection, chunks: Iterable[bytes], speed: float, state: _State) -> None:
    async for chunk in paced(chunks, speed):
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode("ascii")}
        await socket.send(json.dumps(event))
    state.sent_all = True
    await _finish(socket)


async def _finish(socket: ClientConnection) -> None:
    # The rest of the buffer is the last utterance (or, without VAD, the only
    # one). The server answers events in order: once the clear after it is
    # answered, every utterance there will be is committed (server VAD's
    # while the audio came, and this one).
    await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await socket.send(json.dumps({"type": "input_audio_buffer.clear"}))


async def _receive(socket: ClientConnection, state: _State, printer: Printer) -> None:
    try:
        async for message in socket:
            try:
                event = json.loads(message)
            except ValueError:
                continue
            if isinstance(event, dict):
                _on_event(event, state, printer)
    except ConnectionClosed as exc:
        if not state.finished.is_set():
            raise LiveError(f"the service closed the connection ({exc})", EXIT_SERVICE) from None
        return
    if not state.finished.is_set():
        raise LiveError("the service closed the connection before the transcription ended", EXIT_SERVICE)


def _on_event(event: dict[str, Any], state: _State, printer: Printer) -> None:
    kind = event.get("type")
    item = str(event.get("item_id") or "")
    if kind == "input_audio_buffer.committed":
        state.pending.add(item)
    elif kind == "input_audio_buffer.cleared":
        state.final_commit_done = True
    elif kind == "conversation.item.input_audio_transcription.delta":
        printer.delta(item, str(event.get("delta") or ""))
    elif kind == "conversation.item.input_audio_transcription.completed":
        printer.completed(item, str(event.get("transcript") or ""))
        state.pending.discard(item)
        state.completed += 1
    elif kind == "conversation.item.input_audio_transcription.failed":
        detail = (event.get("error") or {}).get("message") or "no reason given"
        printer.completed(item, "")
        console.error(f"an utterance could not be transcribed: {detail}")
        state.pending.discard(item)
        state.failed += 1
    elif kind == "error":
        error = event.get("error") or {}
        if error.get("code") == EMPTY_COMMIT and state.sent_all:
            pass  # server VAD had committed everything already
        elif error.get("code") in BUSY:
            raise LiveError(f"the service is busy: {error.get('message')}", EXIT_SERVICE)
        else:
            raise LiveError(f"the service refused the stream: {error.get('message') or error}", EXIT_USAGE)
    state.check()


def _refused(exc: InvalidStatus) -> LiveError:
    status = exc.response.status_code
    message = f"HTTP {status}"
    try:
        body = json.loads(bytes(exc.response.body or b""))
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        pass
    if status in (401, 403):
        return LiveError(message, EXIT_CREDENTIALS)
    if status == 404:
        return LiveError(f"{message} (this service has no realtime transcription socket; upgrade it)", EXIT_USAGE)
    return LiveError(message, EXIT_USAGE if 400 <= status < 500 and status != 429 else EXIT_SERVICE)


def run_live(args: argparse.Namespace) -> int:
    problems = check_args(args)
    if problems:
        for problem in problems:
            console.error(problem)
        return EXIT_USAGE
    try:
        url = socket_url(console.url(args), keep_audio=args.keep_audio)
        chunks = stream_chunks(sys.stdin.buffer) if args.file == "-" else file_chunks(Path(args.file))
        printer = Printer(sys.stdout, sys.stdout.isatty())
        return asyncio.run(stream(url, console.token(args), chunks, args, printer, open_timeout=args.http_timeout))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except LiveError as exc:
        hint = ""
        if exc.exit_code == EXIT_CREDENTIALS and not console.token(args):
            hint = f" (no token given: use --token or {console.TOKEN_ENV})"
        console.error(exc.message + hint)
        return exc.exit_code
