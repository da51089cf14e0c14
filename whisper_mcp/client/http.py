"""A small synchronous HTTP client for a running whisper-mcp service.

    from whisper_mcp.client.http import ServiceClient

    with ServiceClient("http://127.0.0.1:8765") as client:
        job = client.submit("meeting.wav", language="en")
        record = client.wait(job["job_id"])
        text = client.download(job["job_id"], "srt")

Every failure raises ``ClientError``: ``status_code`` is the HTTP status the
service answered with (``None`` when it could not be reached at all), ``code``
its machine-readable error code and ``message`` its explanation.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from whisper_mcp.queue.jobs import FINISHED_STATUSES

DEFAULT_URL = "http://127.0.0.1:8765"
FINISHED = FINISHED_STATUSES

__all__ = ["DEFAULT_URL", "FINISHED", "ClientError", "ServiceClient"]


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write a transcript so a reader never sees half a file; with ``mode``, the
    file gets those permission bits (otherwise 0600, as a temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ClientError(Exception):
    """The service refused a request, answered unexpectedly, or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code

    @property
    def unreachable(self) -> bool:
        """True when no HTTP answer came back (connection refused, DNS, timeout);
        not for a problem with the file being sent (``code`` says which)."""
        return self.status_code is None and self.code is None

    def __str__(self) -> str:
        return self.message


def upload_name(name: str) -> str:
    """A file name as it can be sent: bytes that were not valid UTF-8 (kept by
    Python as lone surrogates) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _FileChanged(Exception):
    """The file being uploaded ended early or could not be read."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Snapshot:
    """A file read as exactly the bytes it had when the upload began: the
    request declares that length, so a file that grows is sent as it was and
    one that shrinks raises ``_FileChanged`` instead of breaking the request."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._start = f.tell()
        self.length = os.fstat(f.fileno()).st_size - self._start
        self._position = 0

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.length}[whence]
        self._position = max(0, min(self.length, base + offset))
        return self._position

    def read(self, size: int = -1) -> bytes:
        want = self.length - self._position if size < 0 else min(size, self.length - self._position)
        if want <= 0:
            return b""
        try:
            self._f.seek(self._start + self._position)
            data = self._f.read(want)
        except OSError as exc:
            raise _FileChanged("file_unreadable", f"it could not be read: {exc.strerror or exc}") from None
        if len(data) < want:
            raise _FileChanged("file_changed", "it became shorter while it was being uploaded")
        self._position += len(data)
        return data


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ServiceClient:
    """Talks to the REST routes of one service. Reuses one connection pool; close it
    (or use it as a context manager) when done."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ----------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ClientError(f"the service at {self.url} did not answer in time ({type(exc).__name__}).") from exc
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ClientError(f"cannot reach the service at {self.url}: {reason}") from exc
        if response.is_success:
            return response
        raise self._error(response)

    @staticmethod
    def _error(response: httpx.Response) -> ClientError:
        code = None
        message = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            error = body.get("error")
            if isinstance(error, Mapping):
                code = error.get("code")
                message = error.get("message")
            elif isinstance(error, str):
                message = error
            elif isinstance(body.get("detail"), str):
                message = body["detail"]
        if not message:
            text = response.text.strip()
            message = f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text[:300]}" if text else "")
        return ClientError(str(message), response.status_code, code if isinstance(code, str) else None)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            raise ClientError(
                f"the service answered {method} {path} with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')}).",
                response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise ClientError(f"unexpected answer to {method} {path}: {data!r}", response.status_code)
        return data

    # -- API ---------------------------------------------------------------

    def submit(self, path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
        """Upload a recording (streamed from disk, never read whole into memory) and
        queue it. ``options`` are the form fields of ``POST /transcribe`` (``job_id``,
        ``model``, ``language``, ``task``, ``priority``, ``cache`` ...); ``None``
        values are left out. Returns the job record (status ``queued``, or
        ``completed`` for a cached transcript)."""
        file_path = Path(path)
        try:
            f = open(file_path, "rb")
        except OSError as exc:
            raise ClientError(f"cannot read {file_path}: {exc.strerror or exc}") from exc
        with f:
            return self.submit_file(f, file_path.name, **options)

    def submit_file(self, f: BinaryIO, filename: str, **options: Any) -> dict[str, Any]:
        """``submit`` for a file already open (binary, from its current position
        to the end it has now), sent as ``filename``: a name that is not valid
        UTF-8 goes as ``upload_name`` makes it. A file that shrinks while it is
        sent raises ``ClientError`` with code ``file_changed``, one that cannot
        be read ``file_unreadable``; neither is ``unreachable``."""
        data = {name: _form_value(value) for name, value in options.items() if value is not None}
        name = upload_name(filename)
        try:
            return self._json(
                "POST",
                "/transcribe",
                files={"file": (name, _Snapshot(f), "application/octet-stream")},
                data=data,
                # The answer comes after the service has stored and probed the whole
                # upload: allow a long file more than one request timeout for that.
                timeout=httpx.Timeout(self.timeout, read=max(self.timeout, 300.0)),
            )
        except _FileChanged as exc:
            raise ClientError(f"{name}: {exc}", code=exc.code) from None

    def status(self, job_id: str, fmt: str | None = None) -> dict[str, Any]:
        """The job's record; ``transcript`` (rendered in ``fmt``) once completed, ``error`` once failed."""
        params = {"format": fmt} if fmt else None
        return self._json("GET", f"/status/{quote(job_id, safe='')}", params=params)

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
        *,
        reconnect_for: float = 30.0,
    ) -> dict[str, Any]:
        """Poll until the job is completed, failed or cancelled and return its final
        record. ``on_update`` is called with every record read (the final one too).
        Raises ``ClientError`` when ``timeout`` seconds pass first (the job keeps
        running on the service). Connection failures are retried for up to
        ``reconnect_for`` seconds in a row, so a service restart does not end the
        wait: its queue is durable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        down_since: float | None = None
        while True:
            try:
                record = self.status(job_id)
            except ClientError as exc:
                if not exc.unreachable:
                    raise
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since >= reconnect_for:
                    raise
            else:
                down_since = None
                if on_update is not None:
                    on_update(record)
                if record.get("status") in FINISHED:
                    return record
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientError(
                    f"job {job_id!r} did not finish within {timeout:g} s; it keeps running on the service."
                )
            pause = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            time.sleep(pause)

    def download(self, job_id: str, fmt: str = "txt") -> str:
        """The finished transcript in ``txt``, ``srt``, ``vtt``, ``json`` or ``tsv``."""
        return self._request("GET", f"/download/{quote(job_id, safe='')}", params={"format": fmt}).text

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/jobs/{quote(job_id, safe='')}")

    def jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """A page of jobs: ``{"jobs": [...], "total", "next_offset"}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._json("GET", "/jobs", params=params)

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/models")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")
