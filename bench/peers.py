"""Whisper outside the service: bench/_helper.py processes, each holding one
engine (openai-whisper, faster-whisper, whisper.cpp, whisper-mcp's own), driven
over a pipe, and a fresh process per clip."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.context import HELPER, PY, Ctx
from bench.report import Section


def faster_name(device: str) -> str:
    """faster-whisper's row label: the compute type it runs with on ``device``."""
    return "faster-whisper " + ("int8" if device == "cpu" else "float16")


class Helper:
    """A persistent bench/_helper.py process holding one engine (see its docstring)."""

    def __init__(self, ctx: Ctx, engine: str, threads: int = 0, env: dict[str, str] | None = None) -> None:
        self.log_path = ctx.workdir / f"helper-{engine}-{threads}-{len(env or {})}.log"
        self.stderr = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PY, str(HELPER), "serve", engine, str(threads), ctx.model, ctx.device],
            cwd=ctx.tree, env={**ctx.sub_env(), **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )  # fmt: skip
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.flush()
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"helper exited ({self.proc.poll()}):\n{tail}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"helper: {out['error']}")
        return out

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd, default=str) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_helpers(ctx: Ctx, names: list[str], sec: Section, stack: contextlib.ExitStack) -> dict[str, Helper]:
    """The peers that start here; a missing optional one (pywhispercpp) is a note, not an error."""
    helpers: dict[str, Helper] = {}
    for name in names:
        try:
            helpers[name] = stack.enter_context(Helper(ctx, name))
        except RuntimeError as exc:
            sec.notes.append(f"row {name} skipped: {str(exc).strip().splitlines()[-1]}")
    return helpers


def cold_process(ctx: Ctx, path: Path) -> dict[str, Any]:
    """One clip in a new process (bench/_helper.py cold): its own timings, and
    the wall time from spawn to exit."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [PY, str(HELPER), "cold", str(path), ctx.model, ctx.device],
        cwd=ctx.tree,
        env=ctx.sub_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"cold process failed ({p.returncode}):\n{p.stderr[-2000:]}")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    info["wall_s"] = wall
    return info
