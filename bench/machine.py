"""The machine and tree a run measures, for the header and the JSON's meta."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state(tree: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree, capture_output=True, text=True
        ).stdout.strip()
        return (head or "not a git checkout") + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"
