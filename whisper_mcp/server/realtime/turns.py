"""Server VAD's turns: where speech starts and stops, from the voice
detector's probability for each 32 ms frame, as OpenAI's ``server_vad``
describes them (``threshold``, ``silence_duration_ms``; the session applies
``prefix_padding_ms``). Pure: frames in, events out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_MS = 32  # engines.vad.FRAME at 16 kHz
# Speech ends only below threshold - this (Silero's own hysteresis), so a
# word's quiet tail does not end a turn.
HYSTERESIS = 0.15


@dataclass(frozen=True)
class Turn:
    kind: str  # "started" or "stopped"
    ms: int  # where, in the session's audio: speech's first frame, or the first frame of the silence that ended it


@dataclass
class Turns:
    threshold: float
    silence_ms: int
    speaking: bool = False
    frames: int = 0  # frames seen so far in the session
    quiet_since: int | None = None  # ms where the silence within the current turn began

    @property
    def quiet_ms(self) -> int:
        """How long the silence within the current turn has lasted so far (0: none)."""
        return 0 if self.quiet_since is None else self.frames * FRAME_MS - self.quiet_since

    def push(self, probabilities: np.ndarray) -> list[Turn]:
        found: list[Turn] = []
        for p in probabilities:
            ms = self.frames * FRAME_MS
            self.frames += 1
            if not self.speaking:
                if p >= self.threshold:
                    self.speaking, self.quiet_since = True, None
                    found.append(Turn("started", ms))
                continue
            if p >= max(self.threshold - HYSTERESIS, 0.01):
                self.quiet_since = None
                continue
            if self.quiet_since is None:
                self.quiet_since = ms
            if ms + FRAME_MS - self.quiet_since >= self.silence_ms:
                self.speaking = False
                found.append(Turn("stopped", self.quiet_since))
                self.quiet_since = None
        return found

    def reset(self) -> None:
        """The buffer was cleared or committed by hand: no turn in progress."""
        self.speaking, self.quiet_since = False, None


__all__ = ["FRAME_MS", "Turn", "Turns"]
