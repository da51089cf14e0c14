"""Real MCP clients from npm (Codex CLI, MCP Inspector) for the end-to-end
tests, and the network namespace they run in.

Packages are installed once into a cache folder the tests own
(``~/.cache/whisper-mcp-tests/npm``, or ``$WHISPER_MCP_TEST_CACHE/npm``), so
later runs need no network. Clients and servers then run inside a fresh
network namespace (``unshare -n``, loopback only): nothing they do can leave
the machine, update checks included. Without npm, the registry, or
``unshare``, the tests skip and say which.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("WHISPER_MCP_TEST_CACHE") or Path.home() / ".cache" / "whisper-mcp-tests") / "npm"
INSTALL_TIMEOUT_S = 600

__all__ = ["CACHE", "in_netns", "need_netns", "npm_env", "npm_install", "npx_warm", "run_in_netns"]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One installer at a time per package, across processes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _need_npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the real MCP client cannot be installed")
    return npm


def npm_env(**extra: str) -> dict[str, str]:
    """The environment for npm/npx: the tests' own npm cache, no update notices."""
    env = dict(os.environ)
    env.update(npm_config_cache=str(CACHE / "cache"), npm_config_update_notifier="false", npm_config_fund="false")
    env.update(extra)
    return env


def npm_install(package: str, version: str, binary: str) -> Path:
    """``package@version`` installed under the cache (once); the path of its ``binary``."""
    folder = CACHE / f"{package.replace('/', '+')}@{version}"
    path = folder / "node_modules" / ".bin" / binary
    done = folder / ".installed"
    with _locked(folder.name):
        if done.exists() and path.exists():
            return path
        npm = _need_npm()
        folder.mkdir(parents=True, exist_ok=True)
        # A throwaway download cache: the package is kept installed, its tarballs are not.
        with tempfile.TemporaryDirectory(prefix="npm-cache-") as cache:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), f"{package}@{version}"],
                env=npm_env(npm_config_cache=cache),
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        if result.returncode != 0 or not path.exists():
            pytest.skip(f"npm could not install {package}@{version}: {(result.stderr or result.stdout)[-800:]}")
        done.write_text(version)
    return path


def npx_warm(spec: str, *args: str) -> None:
    """Run ``npx -y spec args`` once with network, so that the same ``npx``
    command finds ``spec`` in the tests' npm cache later, offline."""
    _need_npm()
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed")
    with _locked("npx-" + spec.replace("/", "+")):
        offline = subprocess.run(
            [npx, "-y", spec, *args], env=npm_env(npm_config_offline="true"), capture_output=True, timeout=120
        )
        if offline.returncode == 0:
            return
        result = subprocess.run(
            [npx, "-y", spec, *args], env=npm_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        if result.returncode != 0:
            pytest.skip(f"npx could not fetch {spec}: {(result.stderr or result.stdout)[-800:]}")


def need_netns() -> None:
    """Skip unless this machine lets the tests make a network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is missing: cannot isolate the clients in a network namespace")
    probe = subprocess.run(in_netns(["true"]), capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace (unshare -n): {probe.stderr.strip()[-300:]}")


def in_netns(argv: Sequence[str]) -> list[str]:
    """``argv`` run in a new network namespace whose only interface is loopback."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def run_in_netns(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run in a new namespace; on timeout, kill every process it started."""
    proc = subprocess.Popen(
        in_netns(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"{argv[0]} did not finish in {timeout}s:\n{out[-3000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
