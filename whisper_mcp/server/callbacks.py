"""Completion callbacks: POST a job's outcome to its ``callback_url``.

Delivery state lives with the job (changed through the queue), so a restart neither loses a pending
callback nor repeats a delivered one. Failures are retried with back-off and
never change the job's own status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from anyio import to_thread

from whisper_mcp.formats import render
from whisper_mcp.queue.jobs import Job
from whisper_mcp.queue.manager import JobQueue

log = logging.getLogger("whisper_mcp.server.callbacks")

SIGNATURE_HEADER = "X-Whisper-MCP-Signature"


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
    ) -> None:
        self._queue = queue
        self._public_url = public_url.rstrip("/")
        self._secret = secret or None
        self._timeout = timeout
        self._backoff = backoff
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """A job ended (call on the event loop): look for due callbacks now."""
        self._kick.set()

    async def run(self) -> None:
        # One callback claimed at a time, for longer than its delivery may take
        # (bounded by the timeout): no other replica takes it while it is sent.
        lease = 2 * self._timeout
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            while True:
                self._kick.clear()
                while due := await to_thread.run_sync(self._queue.due_callbacks, 1, lease):
                    await self._deliver(client, due[0])
                next_at = await to_thread.run_sync(self._queue.next_callback_at)
                delay = None if next_at is None else max(0.05, next_at - time.time())
                try:
                    await asyncio.wait_for(self._kick.wait(), delay)
                except TimeoutError:
                    pass

    async def payload(self, job: Job) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": job.job_id, "status": job.status.value}
        if job.status.value == "completed":
            result = await to_thread.run_sync(self._queue.result, job) or {}
            body["transcript"] = render(result, "txt")  # the same text /download serves
            body["language"] = result.get("language")
            body["download_url"] = f"{self._public_url}/download/{job.job_id}"
        else:
            body["error"] = job.error
        body["status_url"] = f"{self._public_url}/status/{job.job_id}"
        return body

    async def _deliver(self, client: httpx.AsyncClient, job: Job) -> None:
        assert job.callback_url is not None
        body = json.dumps(await self.payload(job), ensure_ascii=False).encode()
        headers = {"content-type": "application/json", "user-agent": "whisper-mcp"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        error: str | None = None
        try:
            # The whole delivery, not each of its steps, within the timeout.
            response = await asyncio.wait_for(
                client.post(job.callback_url, content=body, headers=headers), self._timeout
            )
            if not response.is_success:
                error = f"receiver answered HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
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
