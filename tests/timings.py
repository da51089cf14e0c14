"""The order `make test` hands test files to its workers, from each file's
CPU and wall seconds as last recorded (tests/timings.json).

The suite is CPU-bound on two cores: it ends soonest when both stay busy to
the end. Three workers share them, so a file that mostly waits (on timers, a
stopped database, a paced stream) costs nothing while two others compute, but
left to the end it idles a core. So: the files that compute longest first,
each followed by one that mostly waits; then the rest of those that wait;
then the short in-process files, which fill the end. A file not in the table
(a new one) goes first if it starts programs or loads models, last if not.

``pytest --record-timings`` (as `make test PYTEST_ARGS=--record-timings`)
rewrites the table from that run: per file, the CPU of the worker and of
every process it started while the file ran, and the wall time."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

TABLE = Path(__file__).parent / "timings.json"
WAITS = 0.4  # below this CPU per wall second a file mostly waits
_TICK = os.sysconf("SC_CLK_TCK")


def load(table: Path = TABLE) -> dict[str, tuple[float, float]]:
    try:
        return {name: (cpu, wall) for name, (cpu, wall) in json.loads(table.read_text()).items()}
    except (OSError, ValueError):
        return {}


def order(files: list[str], in_process: set[str], timings: dict[str, tuple[float, float]]) -> list[str]:
    """``files`` (paths relative to the repository) in the order to run them."""
    unknown = float("inf")

    def cpu(name: str) -> float:
        return timings[name][0] if name in timings else (0.0 if name in in_process else unknown)

    def waits(name: str) -> bool:
        return name in timings and timings[name][0] < WAITS * timings[name][1]

    waiting = sorted((f for f in files if waits(f)), key=lambda f: -timings[f][1])
    computing = sorted((f for f in files if not waits(f) and f not in in_process), key=lambda f: -cpu(f))
    filling = sorted((f for f in files if not waits(f) and f in in_process), key=lambda f: -cpu(f))
    ordered: list[str] = []
    for name in computing:
        ordered.append(name)
        if waiting:
            ordered.append(waiting.pop(0))
    return ordered + waiting + filling


def tree_cpu() -> float:
    """CPU seconds of this process, its reaped children and its live
    descendants (servers, programs a test started and has not stopped)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    children: dict[int, list[tuple[int, float]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # ppid; utime, stime, and the waited-for children's cutime, cstime
        children.setdefault(int(fields[1]), []).append((int(entry), sum(map(int, fields[11:15])) / _TICK))
    stack = [os.getpid()]
    while stack:
        for pid, seconds in children.get(stack.pop(), []):
            total += seconds
            stack.append(pid)
    return total


def merge(parts: list[dict[str, list[float]]], table: Path = TABLE) -> None:
    """Write the workers' per-file figures over the table's."""
    merged = {name: list(figures) for name, figures in load(table).items()}
    for part in parts:
        merged.update(part)
    lines = [f"{json.dumps(name)}: [{cpu:.1f}, {wall:.1f}]" for name, (cpu, wall) in sorted(merged.items())]
    table.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one file a line: diffs read
