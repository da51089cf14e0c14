"""Whether the shared database can be reached: a circuit breaker.

Calls report a failure that may mean the database is away (``suspect``); a
watch thread then probes it with one short connection (``step``). A failed
probe marks it down: from then on every call fails at once with
``DatabaseUnavailable`` (a 503 in words) instead of waiting out a
connection timeout, and the watch probes again at each step (twice a
second) until the database answers. An outage is logged twice, when it starts and when it ends
(with its length), however many calls failed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from whisper_mcp.errors import DatabaseUnavailable

log = logging.getLogger("whisper_mcp.queue.breaker")


class Breaker:
    """``probe`` raises if the database cannot be reached. ``on_down`` runs
    once an outage starts (drop connections that are dead or hung);
    ``on_up`` runs after a probe succeeds and before calls are let through
    again (fresh connections). Listeners (``on_change``) hear ``False`` when
    an outage starts and ``True`` when it ends."""

    def __init__(
        self,
        where: str,
        probe: Callable[[], None],
        *,
        on_down: Callable[[], None] = lambda: None,
        on_up: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self._probe = probe
        self._on_down = on_down
        self._on_up = on_up
        self._clock = clock
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._up.set()
        self._suspect = threading.Event()
        self._down_since: float | None = None
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def check(self) -> None:
        """Raise ``DatabaseUnavailable`` at once while the database is down."""
        if not self._up.is_set():
            raise DatabaseUnavailable()

    def wait_up(self, timeout: float) -> bool:
        """Whether the database is up, waiting up to ``timeout`` seconds for it."""
        return self._up.wait(timeout)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def suspect(self) -> None:
        """A call failed, or hangs, in a way that may mean an outage: probe at the next step."""
        self._suspect.set()

    def wait_for_news(self, seconds: float) -> None:
        """The watch thread's pause: ``seconds``, or until a call is suspicious."""
        self._suspect.wait(seconds)

    def step(self, *, stalled: bool = False) -> None:
        """One round of the watch: while down, or when a call failed or
        ``stalled`` (has run too long), probe; a failed probe starts an
        outage, a successful one while down ends it."""
        if self.up and not stalled and not self._suspect.is_set():
            return
        self._suspect.clear()
        try:
            self._probe()
        except Exception as exc:
            self._trip(exc)
            return
        if not self.up:
            self._reset()

    def _trip(self, exc: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
            self._up.clear()
        reason = " ".join(str(exc).split()) or type(exc).__name__
        log.warning(
            "the job database (%s) cannot be reached (%s); requests that need it are refused (503) until it is back",
            self.where,
            reason[:300],
        )
        self._call(self._on_down)
        self._tell(False)

    def _reset(self) -> None:
        self._call(self._on_up)
        with self._lock:
            since, self._down_since = self._down_since, None
            self._up.set()
        lasted = 0.0 if since is None else self._clock() - since
        log.warning("the job database (%s) is reachable again, after %.1f s away", self.where, lasted)
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in self._listeners:
            self._call(listener, up)

    @staticmethod
    def _call(action: Callable[..., None], *args: object) -> None:
        try:
            action(*args)
        except Exception:  # a listener's bug must not stop the watch
            log.exception("a listener of the job database's availability failed")


__all__ = ["Breaker"]
