"""Completion callbacks: POST a job's outcome to its ``callback_url``.

Delivery state lives with the job (changed through the queue), so a restart
never loses a pending callback. Delivery is at least once: a server stopped
after sending and before the receiver's answer sends again, with the same
delivery id (``X-Whisper-MCP-Delivery``, and ``delivery_id`` in the body) for
the receiver to dedupe on. Failures are retried with back-off and never change
the job's own status. Up to ``concurrency`` deliveries run at once, so slow
receivers hold up only their own callbacks. Of a receiver's answer only the
status is used, and no more than a few KB of it are read, as sent. Where a
callback may go: ``egress.CallbackPolicy``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from anyio import to_thread

from whisper_mcp.errors import DataMissing, DependencyUnavailable, StorageUnavailable
from whisper_mcp.formats import render
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.server.egress import CallbackPolicy, CallbackRefused, Target, Unresolvable, pinned, redact_url

log = logging.getLogger("whisper_mcp.server.callbacks")

SIGNATURE_HEADER = "X-Whisper-MCP-Signature"
DELIVERY_HEADER = "X-Whisper-MCP-Delivery"
# One text for every receiver that could not be reached, whatever the cause
# (refused, closed port, timeout, DNS): a job's callback error must not tell
# open ports from closed ones. The cause is logged.
UNREACHABLE = "the receiver could not be reached (no connection or no answer in time)"
REBOUND = "the callback_url's host now resolves to an address callbacks may not go to"
# How much of a receiver's answer is read (its status is all that is used).
ANSWER_BYTES = 4096
# After a failed look for due callbacks (the database away or failing), the next look.
RETRY_SECONDS = 1.0


def delivery_id(job: Job) -> str:
    """The same for every attempt at one job's callback, and different for
    another job (even one that reuses the job id after expiry): from the
    job's internal key, which is never shown."""
    return hashlib.sha256(b"whisper-mcp callback " + job.key.encode()).hexdigest()[:32]


def sign(secret: str, body: bytes) -> str:
    """Header value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class CallbackSender:
    def __init__(
        self,
        queue: JobQueue,
        *,
        public_url: str,
        secret: str | None = None,
        backoff: tuple[float, ...],
        timeout: float = 10.0,
        policy: CallbackPolicy | None = None,
        concurrency: int = 8,
    ) -> None:
        self._queue = queue
        self._public_url = public_url.rstrip("/")
        self._secret = secret or None
        self._timeout = timeout
        self._backoff = backoff
        self.policy = policy if policy is not None else CallbackPolicy(allow_loopback=True)
        self._concurrency = max(1, concurrency)
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """A job ended (call on the event loop): look for due callbacks now."""
        self._kick.set()

    async def vet(self, url: str) -> None:
        """``CallbackRefused`` (a 400) if callbacks may not go to ``url`` now."""
        try:
            await self.policy.check(url)
        except CallbackRefused as exc:  # the answer may say less than this
            log.info("callback_url %s refused at submission: %s", redact_url(url), exc.detail)
            raise

    async def run(self) -> None:
        # Each callback is claimed for longer than its delivery may take
        # (bounded by the timeout, resolution included): no other replica
        # takes it while it is sent. Up to ``concurrency`` at once.
        lease = 2 * self._timeout
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._kick.set()

        # No keep-alive: each connection goes to the address vetted for its
        # own delivery, and with its own TLS server name.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, limits=limits) as client:
            try:
                while True:
                    self._kick.clear()
                    try:
                        delay = await self._claim(client, in_flight, finished, lease)
                    except DependencyUnavailable:  # an outage, logged where it is noticed: look again once it ends
                        delay = RETRY_SECONDS
                    except Exception:  # e.g. a full database: the loop must go on
                        log.exception("could not look for due callbacks; trying again in %.0f s", RETRY_SECONDS)
                        delay = RETRY_SECONDS
                    try:
                        await asyncio.wait_for(self._kick.wait(), delay)
                    except TimeoutError:
                        pass
            finally:
                for task in list(in_flight):
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(
        self,
        client: httpx.AsyncClient,
        in_flight: set[asyncio.Task[None]],
        finished: Callable[[asyncio.Task[None]], None],
        lease: float,
    ) -> float | None:
        """Start the deliveries that are due, as many as there are free
        slots; how long until the next is due (None: until a kick)."""
        free = self._concurrency - len(in_flight)
        if free > 0:
            for job in await to_thread.run_sync(self._queue.due_callbacks, free, lease):
                task = asyncio.create_task(self._deliver(client, job), name=f"callback-{job.job_id}")
                in_flight.add(task)
                task.add_done_callback(finished)
        if len(in_flight) >= self._concurrency:
            return None  # all slots busy: a delivery that ends kicks
        next_at = await to_thread.run_sync(self._queue.next_callback_at)
        return None if next_at is None else max(0.05, next_at - time.time())

    async def payload(self, job: Job) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": job.job_id, "delivery_id": delivery_id(job), "status": job.status.value}
        if job.status.value == "completed":
            try:
                result = await to_thread.run_sync(self._queue.result, job)
            except DataMissing as exc:  # said, rather than an empty transcript or no callback ever
                body["error"] = exc.message
            else:
                body["transcript"] = render(result, "txt")  # the same text /download serves
                body["language"] = result.get("language")
            body["download_url"] = f"{self._public_url}/download/{job.job_id}"
        else:
            body["error"] = job.error
        body["status_url"] = f"{self._public_url}/status/{job.job_id}"
        return body

    async def _deliver(self, client: httpx.AsyncClient, job: Job) -> None:
        try:
            await self._attempt(client, job)
        except DependencyUnavailable as exc:  # an outage (logged where it is noticed): its lease runs out, tried again
            away = "the object store" if isinstance(exc, StorageUnavailable) else "the job database"
            log.info("callback for job %s: its attempt waits for %s", job.job_id, away)
        except Exception:  # e.g. a full database: the lease runs out and it is tried again
            log.exception("callback for job %s could not be attempted", job.job_id)

    async def _attempt(self, client: httpx.AsyncClient, job: Job) -> None:
        assert job.callback_url is not None
        shown = redact_url(job.callback_url)
        body = json.dumps(await self.payload(job), ensure_ascii=False).encode()
        headers = {"content-type": "application/json", "user-agent": "whisper-mcp", DELIVERY_HEADER: delivery_id(job)}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        error: str | None = None
        try:
            # The whole delivery, not each of its steps, within the timeout.
            status = await asyncio.wait_for(self._post(client, job.callback_url, body, headers), self._timeout)
            if not 200 <= status < 300:
                error = f"receiver answered HTTP {status}"
        except Unresolvable as exc:
            log.info("callback for job %s to %s: %s", job.job_id, shown, exc.detail)
            error = UNREACHABLE
        except CallbackRefused as exc:  # the name resolves elsewhere since it was accepted
            log.warning("callback for job %s to %s not sent: %s", job.job_id, shown, exc.detail)
            error = REBOUND
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            log.info("callback for job %s to %s: %s", job.job_id, shown, type(exc).__name__)
            error = UNREACHABLE
        attempt = job.callback_attempts + 1
        gave_up = error is not None and attempt > len(self._backoff)
        next_at = None if error is None or gave_up else time.time() + self._backoff[attempt - 1]
        await to_thread.run_sync(
            lambda: self._queue.record_callback(
                job.job_id, delivered=error is None, gave_up=gave_up, next_attempt_at=next_at, error=error
            )
        )
        if error is None:
            log.info("callback for job %s delivered (attempt %d)", job.job_id, attempt)
        else:
            log.warning(
                "callback for job %s attempt %d failed: %s%s",
                job.job_id,
                attempt,
                error,
                "; giving up" if gave_up else "",
            )

    async def _post(self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST to the address the policy vets now (DNS rebinding), under the
        URL's own name; the receiver's status code."""
        target: Target = await self.policy.check(url)
        # Only the status is used: the answer is read as sent (never
        # decompressed), up to ANSWER_BYTES (one network read past it at
        # most), and the connection closed, so a receiver's huge or
        # compressed answer costs no memory.
        async with pinned(client, "POST", target, headers, body) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= ANSWER_BYTES:
                    break
            return response.status_code
