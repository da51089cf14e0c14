"""A process's memory from /proc: one reading, or samples over time; and its CPU time.

Standard library only: bench/_helper.py imports it too (as ``rss``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def vm_kb(pid: int, field_name: str = "VmRSS") -> int | None:
    """kB value of a /proc/<pid>/status field (VmRSS, VmHWM); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_times(pid: int, tid: int | None = None) -> tuple[float, float]:
    """User and system CPU seconds of a process (or of its thread ``tid``)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def mib(kb: float) -> float:
    return kb / 1024.0


class RssSampler(threading.Thread):
    """VmRSS of a process every ``interval`` seconds, with timestamps."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kb = vm_kb(self.pid)
            if kb is None:
                break
            self.samples.append((time.monotonic(), kb))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def window(self, t0: float, t1: float | None = None) -> list[int]:
        t1 = time.monotonic() if t1 is None else t1
        return [kb for t, kb in list(self.samples) if t0 <= t <= t1]

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else (vm_kb(self.pid) or 0)
