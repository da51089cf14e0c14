"""Who waits for which job to change: event streams and long polls, woken
only by their own job's changes (the queue's ``on_change``, which also
carries other replicas' changes), not by every job's; and what the waiters
of one job share (``shared``), so that a change is read once for all of them.

A running job changes in bursts (each segment of a window as it is decoded,
and the progress after it): its waiters wake at once for the first change,
then at most once per ``wake_interval`` seconds, so hundreds of streams on
one job wake once per burst, not once per change. A queued job's place
moves when other jobs start or leave the queue, so a waiter whose job is
queued also wakes on other jobs' changes, at most once per
``queue_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

# How often, at most, a job's changes wake its waiters: the first at once, the
# rest of a burst together at the interval's end.
WAKE_INTERVAL = 0.025
# How often, at most, a change of another job wakes the waiters of queued jobs.
QUEUE_INTERVAL = 0.5

S = TypeVar("S")


class _Throttle:
    """Calls ``fire`` at once, then at most once per ``interval`` seconds:
    the calls asked for meanwhile become one at the interval's end."""

    def __init__(self, interval: float, fire: Callable[[], None]) -> None:
        self._interval = interval
        self._fire = fire
        self._fired_at = float("-inf")  # loop time
        self._due: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._due is not None:
            return  # a call is due already
        loop = asyncio.get_running_loop()
        delay = self._fired_at + self._interval - loop.time()
        if delay <= 0:
            self._run()
        else:
            self._due = loop.call_later(delay, self._run)

    def _run(self) -> None:
        self._due = None
        self._fired_at = asyncio.get_running_loop().time()
        self._fire()

    def cancel(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None


class _Watched(Generic[S]):
    """One job's waiters, how many changes it has had since it was first
    watched, and the state they share."""

    def __init__(self, shared: S, wake_interval: float) -> None:
        self.waiters: set[Waiter[S]] = set()
        self.changes = 0
        self.shared = shared
        self.wake = _Throttle(wake_interval, self._wake_all)

    def _wake_all(self) -> None:
        for waiter in self.waiters:
            waiter._wake()


class Waiter(Generic[S]):
    """One stream's or long poll's wait for its job: ``clear`` before reading
    the job (so a change during the read is not missed), ``wait`` after."""

    def __init__(self, watched: _Watched[S]) -> None:
        self._watched = watched
        self._event = asyncio.Event()
        # Set by the waiter while its job is queued: then other jobs' changes wake it too.
        self.queued = False

    @property
    def shared(self) -> S:
        """What every waiter of this job shares."""
        return self._watched.shared

    @property
    def changes(self) -> int:
        """The job's changes so far (counted from when it was first watched)."""
        return self._watched.changes

    def clear(self) -> int:
        """Forget the changes seen so far; returns how many there were."""
        self._event.clear()
        return self._watched.changes

    async def wait(self, seconds: float) -> bool:
        """Whether its job changed (or, while queued, the queue did) within ``seconds``."""
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    def _wake(self) -> None:
        self._event.set()


class JobChanges(Generic[S]):
    """The waiters of each job, by job id, and the state each job's waiters
    share (made by ``shared()`` for its first waiter, dropped after its
    last). Lives on the event loop: call ``changed`` there
    (``loop.call_soon_threadsafe`` from other threads)."""

    def __init__(
        self, shared: Callable[[], S], wake_interval: float = WAKE_INTERVAL, queue_interval: float = QUEUE_INTERVAL
    ) -> None:
        self._new = shared
        self._jobs: dict[str, _Watched[S]] = {}
        self._wake_interval = wake_interval
        self._wake_queued = _Throttle(queue_interval, self._queue_changed)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[Waiter[S]]:
        """A waiter for ``job_id``'s changes, for the block's length."""
        watched = self._jobs.get(job_id)
        if watched is None:
            watched = self._jobs[job_id] = _Watched(self._new(), self._wake_interval)
        waiter = Waiter(watched)
        watched.waiters.add(waiter)
        try:
            yield waiter
        finally:
            watched.waiters.discard(waiter)
            if not watched.waiters and self._jobs.get(job_id) is watched:
                watched.wake.cancel()
                del self._jobs[job_id]

    def changed(self, job_id: str) -> None:
        """Job ``job_id`` changed: wake its waiters (now, or with the rest of
        a burst), and soon those of queued jobs."""
        watched = self._jobs.get(job_id)
        if watched is not None:
            watched.changes += 1
            watched.wake()
        self._wake_queued()

    def wake_all(self) -> None:
        """Wake every waiter now, each to read its job again (e.g. the
        database went away: each then finds out, and says so)."""
        for watched in self._jobs.values():
            watched.changes += 1
            watched._wake_all()

    def _queue_changed(self) -> None:
        for watched in self._jobs.values():
            queued = [w for w in watched.waiters if w.queued]
            if queued:
                watched.changes += 1  # its place may have moved: a change to read
                for waiter in queued:
                    waiter._wake()

    def waiting(self, job_id: str | None = None) -> int:
        """How many wait for ``job_id`` (None: for any job)."""
        if job_id is not None:
            watched = self._jobs.get(job_id)
            return 0 if watched is None else len(watched.waiters)
        return sum(len(w.waiters) for w in self._jobs.values())


__all__ = ["QUEUE_INTERVAL", "WAKE_INTERVAL", "JobChanges", "Waiter"]
