"""Section contention: the same clip with one CPU-bound competitor per core,
against a quiet machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import httpx

from bench.context import FIXTURES, Ctx
from bench.peers import start_helpers
from bench.report import Section
from bench.service import service_e2e, serving


@contextlib.contextmanager
def competitors(count: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``yes > /dev/null`` once per core (or ``count`` times): CPU-bound neighbours."""
    procs = [
        subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count or os.cpu_count() or 1)
    ]
    try:
        time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(5)


def run(ctx: Ctx, sec: Section) -> None:
    rounds = ctx.pick(3, 1)
    path = ctx.recording[0] if ctx.recording else FIXTURES / "long.mp3"
    variants: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {"service": ((), {})}
    variants["service --inference-nice 10"] = (("--inference-nice", "10"), {})
    if not ctx.quick:  # what the service did before it set a passive wait policy
        variants["service, OMP_WAIT_POLICY=ACTIVE"] = ((), {"OMP_WAIT_POLICY": "ACTIVE"})
    with contextlib.ExitStack() as stack:
        helpers = start_helpers(ctx, ["faster"], sec, stack)
        clients = {
            name: stack.enter_context(
                httpx.Client(base_url=stack.enter_context(serving(ctx, *flags, env=env)).url, timeout=1800)
            )
            for name, (flags, env) in variants.items()
        }

        def run(name: str) -> float:
            if name in clients:
                return service_e2e(clients[name], path)["total_s"]
            return float(helpers[name].call(op="e2e", path=str(path))["seconds"])

        names = [*clients, *helpers]
        for name in names:
            run(name)  # warm-up
        quiet: dict[str, list[float]] = {n: [] for n in names}
        busy: dict[str, list[float]] = {n: [] for n in names}
        for i in range(rounds):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                quiet[name].append(run(name))
                with competitors():
                    busy[name].append(run(name))
    labels = {"service": "whisper-mcp default", "faster": "  faster-whisper int8, in-process"}
    labels["service, OMP_WAIT_POLICY=ACTIVE"] = "  whisper-mcp with OMP_WAIT_POLICY=ACTIVE (spinning threads)"
    labels["service --inference-nice 10"] = "  whisper-mcp --inference-nice 10"
    for name in names:
        q, b = min(quiet[name]), min(busy[name])
        default = name == "service"
        sec.add(
            f"{labels[name]}: {path.name} beside {os.cpu_count()} busy processes", b, "s", "quiet", q, b / q,
            "busy/quiet", "<= 2.5x" if default else "", (b / q <= 2.5) if default else None,
        )  # fmt: skip
    sec.notes.append(f"competitors: `yes > /dev/null`, one per core ({os.cpu_count()}); fair share is 2x; "
                     f"minimum of {rounds} interleaved round(s), quiet and busy alternating")  # fmt: skip
    sec.details.update(rounds=rounds, clip=path.name, quiet=quiet, busy=busy)
