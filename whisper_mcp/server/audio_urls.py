"""Audio sent as a URL: its shape checked at submission, fetched by the job's run.

A client that holds a link to a recording, not its bytes, sends ``audio_url``.
The submission only checks the URL's shape and scheme (and answers 202 at
once); the job's run fetches it (``AudioSources.fetch``, on one of the
worker's fetch threads, never the event loop), stores it as an upload would have been stored
(``JobQueue.fetched``: the queue still makes every change to the job), and
then decodes it. A fetch that fails fails the job, in words that name the
URL's host; the URL's user info and query never reach a log or a message.

One fetcher per scheme: ``http``/``https`` (``HttpFetcher``) go through the
same egress policy as callbacks (``egress.CallbackPolicy``: each hop's address
vetted, the connection pinned to it, redirects followed only that way), within
the upload limit and timeouts. Another scheme is one more ``Fetcher`` in the
mapping ``app.build_service`` hands in: ``s3://`` reads with the object
store's credentials once the server has one; until then it is refused at
submission, saying how to enable it (``S3_NEEDS_STORE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from whisper_mcp.engines.audio import probe_audio
from whisper_mcp.errors import InvalidAudio, InvalidInput, PayloadTooLarge
from whisper_mcp.queue.files import IncomingFile
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.server.egress import CallbackPolicy, CallbackRefused, pinned, redact_url

log = logging.getLogger("whisper_mcp.server.audio_urls")

MAX_URL_CHARS = 2048
CONNECT_SECONDS = 10.0
# Between two reads of the answer; the whole fetch has FETCH_SECONDS.
READ_SECONDS = 30.0
FETCH_SECONDS = 600.0
MAX_REDIRECTS = 5
# How often a fetch asks its run whether to go on (a cancel, a shutdown), bytes arriving or not.
REPORT_SECONDS = 0.5
S3_NEEDS_STORE = (
    "s3:// URLs need the server to run with --storage-url s3://... (it reads them with its object "
    "store's credentials); send an http(s):// URL or the file itself instead."
)
# One text for every server that could not be reached, whatever the cause
# (refused, closed port, timeout, TLS): a job's error must not tell open
# ports from closed ones. The cause is logged.
UNREACHABLE = "no connection or no answer in time"


class FetchFailed(InvalidInput):
    """The audio at a job's URL could not be fetched (the job fails with this)."""

    code = "fetch_failed"


class Fetcher(Protocol):
    async def fetch(self, url: str, sink: IncomingFile) -> None:
        """Write the audio at ``url`` into ``sink``; ``FetchFailed`` saying
        why not, in words that quote no part of the URL."""


def url_host(url: str) -> str:
    """The URL's host, for messages (no user info, no port); its scheme if it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "?"
    return parts.hostname or (f"a {parts.scheme}:// URL" if parts.scheme else "?")


def url_filename(url: str) -> str | None:
    """The file name a URL's path ends in (``monday.wav``), for a job sent without one."""
    try:
        name = PurePosixPath(unquote(urlsplit(url).path)).name
    except ValueError:
        return None
    return name[:255] or None


class HttpFetcher:
    """``http://`` and ``https://``: every hop vetted by the callback policy
    and connected to the address it vetted; the answer read as sent."""

    def __init__(
        self,
        policy: CallbackPolicy,
        *,
        max_bytes: int,
        connect_seconds: float = CONNECT_SECONDS,
        read_seconds: float = READ_SECONDS,
        total_seconds: float = FETCH_SECONDS,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.policy = policy
        self._max_bytes = max_bytes
        self._timeout = httpx.Timeout(read_seconds, connect=connect_seconds)
        self._total = total_seconds
        self._max_redirects = max_redirects

    async def fetch(self, url: str, sink: IncomingFile) -> None:
        # No keep-alive: each connection goes to the address vetted for its own hop.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, limits=limits) as client:
            try:
                async with asyncio.timeout(self._total):
                    await self._follow(client, url, sink)
            except (httpx.HTTPError, TimeoutError) as exc:  # network errors (not the disk's): httpx wraps them
                log.info("audio_url %s: %s", redact_url(url), type(exc).__name__)
                raise FetchFailed(UNREACHABLE) from None

    async def _follow(self, client: httpx.AsyncClient, url: str, sink: IncomingFile) -> None:
        first = url
        for _hop in range(self._max_redirects + 1):
            try:
                target = await self.policy.check(url, field="audio_url", what="audio fetches")
            except CallbackRefused as exc:
                log.info("audio_url %s refused: %s", redact_url(url), exc.detail)
                if url == first:
                    raise FetchFailed(exc.message) from None
                raise FetchFailed(f"its redirect to {url_host(url)} was refused: {exc.message}") from None
            async with pinned(client, "GET", target, {"user-agent": "whisper-mcp"}) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    try:
                        url = str(httpx.URL(url).join(location))
                    except (httpx.InvalidURL, ValueError):
                        raise FetchFailed("it redirects to a location that is not a valid URL") from None
                    continue
                if response.status_code != 200:
                    raise FetchFailed(f"HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise PayloadTooLarge(f"{int(declared)} bytes")
                async for chunk in response.aiter_raw():
                    sink.write(chunk)  # this fetch's own event loop, on the run's thread
                return
        raise FetchFailed(f"more than {self._max_redirects} redirects")


class BucketFetcher:
    """``s3://bucket/key``: read with the object store's endpoint, region and
    credentials (the server's own bucket, or another these credentials may
    read), streamed into the upload file."""

    def __init__(self, endpoint: str = "", region: str = "") -> None:
        self._endpoint = endpoint
        self._region = region

    async def fetch(self, url: str, sink: IncomingFile) -> None:
        # Only servers with an object store have this fetcher: obstore is there.
        import obstore
        from obstore.exceptions import BaseError

        from whisper_mcp.queue.objects import connect

        parts = urlsplit(url)
        key = unquote(parts.path.lstrip("/"))
        if not key:
            raise FetchFailed("it names a bucket but no object in it")
        try:
            store = connect(f"s3://{parts.netloc}", endpoint=self._endpoint, region=self._region)
            got = await obstore.get_async(store, key)
            size = got.meta["size"]
            if size > sink.max_bytes:
                raise PayloadTooLarge(f"{size} bytes")
            async for chunk in got.stream():
                sink.write(bytes(chunk))
        except FileNotFoundError:
            raise FetchFailed("the bucket has no such object") from None
        except (BaseError, ValueError) as exc:  # refused (permissions, no bucket) or no answer
            log.info("audio_url %s: %s", redact_url(url), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise FetchFailed("the object store refused to give it or did not answer") from None


class AudioSources:
    """The fetchers by URL scheme, and what a job's run does with one."""

    def __init__(
        self,
        fetchers: Mapping[str, Fetcher],
        queue: JobQueue,
        *,
        max_bytes: int,
        min_free_bytes: int = 0,
        max_audio_seconds: float | None = None,
    ) -> None:
        # By scheme; one more (s3) may join once the server has its object store.
        self.fetchers = dict(fetchers)
        self._queue = queue
        self._max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._max_audio_seconds = max_audio_seconds

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(self.fetchers)

    def check(self, url: str) -> str:
        """``url`` as the job keeps it, if its shape and scheme can be fetched;
        ``InvalidInput`` (a 400) saying what is wrong otherwise. Nothing is
        resolved or fetched here: that is the job's run."""
        text = url.strip()
        if len(text) > MAX_URL_CHARS:
            raise InvalidInput(f"audio_url is too long ({len(text)} characters; at most {MAX_URL_CHARS}).")
        if any(c <= " " or c == "\x7f" for c in text):
            raise InvalidInput("audio_url may not contain spaces or control characters; percent-encode them.")
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise InvalidInput(f"audio_url {redact_url(text)!r} is not a valid URL.") from None
        scheme = parts.scheme.lower()
        if scheme not in self.fetchers:
            if scheme == "s3":
                raise InvalidInput(S3_NEEDS_STORE)
            accepted = " or ".join(f"{s}://" for s in self.fetchers)
            local = " (the server never reads its own files: send the file itself)" if scheme == "file" else ""
            raise InvalidInput(f"audio_url must be an {accepted} URL{local}, got {redact_url(text)!r}.")
        if not parts.hostname:
            raise InvalidInput(f"audio_url {redact_url(text)!r} names no host.")
        return text

    def fetch(self, job: Job, report: Callable[[float], None]) -> Job:
        """Blocking, on the job's run (a fetch thread): fetch the job's audio, check that it is
        audio (within --max-audio-seconds), and have the queue store it;
        the job as it is then. ``FetchFailed`` or ``InvalidAudio`` naming the
        URL's host if not; ``report``'s exceptions (a cancel, a shutdown) stop
        it where they are raised."""
        assert job.audio_url is not None
        url = job.audio_url
        host = url_host(url)
        fetcher = self.fetchers.get(urlsplit(url).scheme.lower())
        if fetcher is None:  # accepted by a server that had this scheme's fetcher
            raise FetchFailed(f"could not fetch audio from {host}: this server does not read such URLs now")
        sink = self._queue.files.incoming_file(self._max_bytes, self._min_free)
        try:
            asyncio.run(_watched(fetcher.fetch(url, sink), report))
            upload = sink.finish()
        except FetchFailed as exc:
            sink.abort()
            raise FetchFailed(f"could not fetch audio from {host}: {exc.message}") from None
        except PayloadTooLarge:
            sink.abort()
            raise FetchFailed(
                f"could not fetch audio from {host}: it is larger than the server's limit of "
                f"{self._max_bytes // 2**20} MiB (--max-upload-mb)."
            ) from None
        except BaseException:
            sink.abort()
            raise
        try:
            if upload.size == 0:
                raise InvalidAudio("the file is empty (0 bytes)")
            info = probe_audio(upload.path, self._max_audio_seconds)
        except InvalidAudio as exc:
            self._queue.files.discard(upload.path)
            raise InvalidAudio(f"the audio fetched from {host} cannot be used: {exc.message}") from None
        except BaseException:
            self._queue.files.discard(upload.path)
            raise
        log.info("job %s: fetched %d bytes from %s", job.job_id, upload.size, redact_url(url))
        return self._queue.fetched(job, upload, round(info.duration, 3))


async def _watched(fetching: Coroutine[Any, Any, None], report: Callable[[float], None]) -> None:
    """Run ``fetching``, calling ``report(0.0)`` every REPORT_SECONDS while it
    runs, bytes arriving or not: what ``report`` raises (a cancel, a shutdown,
    a lost lease) stops the fetch there and is raised."""
    task = asyncio.ensure_future(fetching)
    while not (await asyncio.wait({task}, timeout=REPORT_SECONDS))[0]:
        try:
            report(0.0)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
    task.result()
