"""The order `make test` hands files to its workers (tests/timings.py)."""

from __future__ import annotations

import json
from pathlib import Path

import timings


def test_computing_files_first_each_beside_one_that_waits_then_the_fillers() -> None:
    table = {
        "e2e/a.py": (60.0, 90.0),  # computes
        "e2e/b.py": (30.0, 40.0),  # computes
        "e2e/waits.py": (5.0, 40.0),  # mostly waits
        "unit/waits.py": (1.0, 8.0),  # mostly waits
        "unit/short.py": (2.0, 2.5),
        "unit/shorter.py": (0.5, 0.6),
    }
    files = [*sorted(table), "e2e/new.py", "unit/new.py"]
    in_process = {"unit/waits.py", "unit/short.py", "unit/shorter.py", "unit/new.py"}
    assert timings.order(files, in_process, table) == [
        "e2e/new.py",  # not yet timed, starts programs: as if the longest
        "e2e/waits.py",
        "e2e/a.py",
        "unit/waits.py",
        "e2e/b.py",
        "unit/short.py",
        "unit/shorter.py",
        "unit/new.py",  # not yet timed, in process: last
    ]


def test_recorded_figures_replace_the_old_and_keep_the_rest(tmp_path: Path) -> None:
    table = tmp_path / "timings.json"
    table.write_text(json.dumps({"a.py": [1.0, 2.0], "b.py": [3.0, 4.0]}))
    timings.merge([{"b.py": [5.04, 6.0]}, {"c.py": [0.0, 0.1]}], table)
    assert timings.load(table) == {"a.py": (1.0, 2.0), "b.py": (5.0, 6.0), "c.py": (0.0, 0.1)}
    assert table.read_text().count("\n") == 5  # one file a line
    assert timings.load(tmp_path / "missing.json") == {}
