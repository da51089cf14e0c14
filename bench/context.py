"""What a bench run is set to (its flags) and where the bench's inputs live."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FIXTURES = ROOT / "tests" / "fixtures"
HELPER = BENCH / "_helper.py"
PY = sys.executable

T = TypeVar("T")


@dataclass(frozen=True)
class Ctx:
    """What one section runs with: the flags, and a fresh folder of its own."""

    workdir: Path  # the section's temporary folder, removed after it
    quick: bool = False
    # Model and device of every server and helper process (--model, --device).
    model: str = "tiny.en"
    device: str = "cpu"
    # The tree whose whisper_mcp is benchmarked (--tree): the server and helper
    # processes run from it; bench code and fixtures come from this checkout.
    tree: Path = ROOT
    # A long recording of real speech and its reference text (--recording), used
    # beside long.mp3 by the sections default and contention.
    recording: tuple[Path, str] | None = None
    out: Path = BENCH / "results" / "latest.json"  # the JSON results file (--out)

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def sub_env(self) -> dict[str, str]:
        """The environment of the server and helper processes: ``tree``'s whisper_mcp first."""
        env = dict(os.environ)
        if self.tree != ROOT:
            env["PYTHONPATH"] = str(self.tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env
