"""One loaded model, shared by batch jobs and live transcription.

The inference thread runs a batch job for as long as it takes (a long file:
minutes); a live session needs a short decode now and then, within a second.
Both use the same loaded model, one at a time (``InferenceGate``): a batch
job holds the gate while it decodes and offers it at each window boundary
(its progress reports); a live decode that is waiting then goes first. So a
live decode waits at most for the batch window in progress, and a batch job
is never starved: after each live decode it gets the gate back for at least
``BATCH_SLICE_SECONDS`` (at least one window) before the next live decode,
while live decodes keep coming. Live decodes run one at a time. An
utterance's last decode (its completed transcript: someone waits for it)
goes before the decodes of utterances still growing and before the batch's
turn (not before the window in progress): these come at most once per
utterance, so they cannot starve the batch, while a listener who waited a
batch window for each would fall further behind.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

# A batch job that took the gate back runs at least this long (its current
# window, at least) before a live decode that waits may go first again.
BATCH_SLICE_SECONDS = 0.25


class InferenceGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: str | None = None  # "batch" or "live"
        self._live_waiting = 0
        self._urgent_waiting = 0  # of those, last decodes of an utterance
        self._batch_waiting = False
        self._batch_owed = False  # a live decode ran while the batch waited: its turn next
        self._batch_since = 0.0  # when the batch last took the gate (monotonic)
        self.live_decodes = 0
        self.batch_yields = 0

    @contextlib.contextmanager
    def live(self, *, urgent: bool = False) -> Iterator[None]:
        """Blocking: hold the model for one live decode; ``urgent`` ones
        (an utterance's last) go before the others that wait, and before
        the batch's turn."""
        with self._cond:
            self._live_waiting += 1
            self._urgent_waiting += urgent
            try:
                self._cond.wait_for(
                    lambda: (
                        self._holder is None
                        and (urgent or not (self._batch_waiting and self._batch_owed))
                        and (urgent or self._urgent_waiting == 0)
                    )
                )
            finally:
                self._live_waiting -= 1
                self._urgent_waiting -= urgent
            self._holder = "live"
        try:
            yield
        finally:
            with self._cond:
                self._holder = None
                self.live_decodes += 1
                self._batch_owed = self._batch_waiting
                self._cond.notify_all()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Blocking: hold the model for a batch job (``between_windows`` offers it)."""
        self._take_batch()
        try:
            yield
        finally:
            with self._cond:
                if self._holder == "batch":
                    self._holder = None
                self._cond.notify_all()

    def between_windows(self) -> None:
        """Called by the batch job at a window boundary: let a waiting live
        decode go first, once the batch has had its slice; then take the gate back."""
        with self._cond:
            if self._holder != "batch" or self._live_waiting == 0:
                return
            if time.monotonic() - self._batch_since < BATCH_SLICE_SECONDS:
                return
            self._holder = None
            self.batch_yields += 1
            self._cond.notify_all()
        self._take_batch()

    def _take_batch(self) -> None:
        with self._cond:
            self._batch_waiting = True
            try:
                self._cond.wait_for(
                    lambda: (
                        self._holder is None
                        and self._urgent_waiting == 0
                        and (self._live_waiting == 0 or self._batch_owed)
                    )
                )
            finally:
                self._batch_waiting = False
            self._batch_owed = False
            self._holder = "batch"
            self._batch_since = time.monotonic()


__all__ = ["BATCH_SLICE_SECONDS", "InferenceGate"]
