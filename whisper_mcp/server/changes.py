"""Who waits for which job to change: event streams and long polls, woken
only by their own job's changes (the queue's ``on_change``, which also
carries other replicas' changes), not by every job's.

A queued job's place moves when other jobs start or leave the queue, so a
waiter whose job is queued also wakes on other jobs' changes, at most once
per ``queue_interval`` seconds (a running job reports a change every window,
and hundreds of streams may be waiting in line).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

# How often, at most, a change of another job wakes the waiters of queued jobs.
QUEUE_INTERVAL = 0.5


class Waiter:
    """One stream's or long poll's wait for its job: ``clear`` before reading
    the job (so a change during the read is not missed), ``wait`` after."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        # Set by the waiter while its job is queued: then other jobs' changes wake it too.
        self.queued = False

    def clear(self) -> None:
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Whether its job changed (or, while queued, the queue did) within ``seconds``."""
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True


class JobChanges:
    """The waiters of each job, by job id. Lives on the event loop: call
    ``changed`` there (``loop.call_soon_threadsafe`` from other threads)."""

    def __init__(self, queue_interval: float = QUEUE_INTERVAL) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self._queue_interval = queue_interval
        self._queue_woken_at = float("-inf")  # loop time the queued waiters were last woken
        self._queue_wake: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[Waiter]:
        """A waiter for ``job_id``'s changes, for the block's length."""
        waiter = Waiter()
        self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[job_id]

    def changed(self, job_id: str) -> None:
        """Job ``job_id`` changed: wake its waiters now, and soon those of queued jobs."""
        for waiter in self._waiters.get(job_id, ()):
            waiter.wake()
        if self._queue_wake is not None:
            return  # a wake of the queued waiters is due already
        loop = asyncio.get_running_loop()
        delay = self._queue_woken_at + self._queue_interval - loop.time()
        if delay <= 0:
            self._wake_queued()
        else:
            self._queue_wake = loop.call_later(delay, self._wake_queued)

    def _wake_queued(self) -> None:
        self._queue_wake = None
        self._queue_woken_at = asyncio.get_running_loop().time()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if waiter.queued:
                    waiter.wake()

    def waiting(self, job_id: str | None = None) -> int:
        """How many wait for ``job_id`` (None: for any job)."""
        if job_id is not None:
            return len(self._waiters.get(job_id, ()))
        return sum(len(w) for w in self._waiters.values())


__all__ = ["QUEUE_INTERVAL", "JobChanges", "Waiter"]
