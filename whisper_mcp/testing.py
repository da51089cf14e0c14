"""A real ``whisper-mcp serve`` process on a free loopback port: the one
launcher the end-to-end tests and the benchmarks share.

Torch-free: it starts the server as a user does, in a subprocess, and waits
for ``/health`` to say the model is loaded.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx


def free_port(twin: int = 0, taken: set[int] | None = None) -> int:
    """A free loopback port below the kernel's ephemeral range (one picked
    inside it can be taken by any outgoing connection before the server
    binds it, or while it restarts); with ``twin``, port + twin is free too.
    Ports in ``taken`` are skipped, and the ones returned are added."""
    taken = set() if taken is None else taken
    top = _ephemeral_start() - twin
    while True:
        port = random.randrange(10000, top)
        wanted = (port, port + twin) if twin else (port,)
        if taken.intersection(wanted):
            continue
        try:
            for candidate in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        taken.update(wanted)
        return port


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class ServerProcess:
    """``python -m whisper_mcp serve --storage STORAGE`` with ``extra`` flags;
    ``--model tiny.en`` unless ``extra`` names a model."""

    def __init__(
        self,
        storage: Path,
        log_path: Path,
        *extra: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.extra = extra
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None  # seconds from start to model loaded
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0, headers: Mapping[str, str] | None = None) -> ServerProcess:
        model = [] if "--model" in self.extra else ["--model", "tiny.en"]
        cmd = [
            sys.executable, "-m", "whisper_mcp", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--storage", str(self.storage), *model, *self.extra,
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{self.url}/health", timeout=2, headers=headers).json().get("model_loaded"):
                    self.ready_s = time.perf_counter() - started
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown sends; SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parent(proc: Path) -> int | None:
    """The parent process id of /proc/PID, if it is still there."""
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class PostgresCluster:
    """A throwaway PostgreSQL server in a temporary folder on a free loopback
    port, for tests and benchmarks. PostgreSQL refuses to run as root, so as
    root it runs as the ``postgres`` user. ``database()`` makes a fresh
    database and returns its URL."""

    def __init__(self, user: str = "postgres") -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="whisper-mcp-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "server.log"
        self._as_user = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
        self._user = user if os.geteuid() == 0 else None
        self._databases = 0

    @staticmethod
    def binaries() -> Path | None:
        """The folder of initdb and pg_ctl, if PostgreSQL is installed."""
        found = shutil.which("initdb")
        if found:
            return Path(os.path.realpath(found)).parent
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        return versions[-1].parent if versions else None

    def start(self) -> PostgresCluster:
        bin_dir = self.binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        if self._user is not None:
            shutil.chown(self.folder, self._user)
        run = lambda *cmd: subprocess.run([*self._as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
        if not self.data.exists():  # else started again after ``halt``
            run(
                str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
            )  # fmt: skip
        run(
            str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200",
            "start",
        )  # fmt: skip
        return self

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Stop the server as an operator does (``pg_ctl stop -m fast``),
        keeping its data: ``start`` brings it back."""
        bin_dir = self.binaries()
        assert bin_dir is not None
        subprocess.run(
            [*self._as_user, str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=True,
            capture_output=True,
        )

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP (or, ``frozen=False``, SIGCONT) the server and every
        process of it: a database that hangs, its connections open."""
        leader = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [leader] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == leader]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self) -> None:
        bin_dir = self.binaries()
        if bin_dir is not None and self.data.exists():
            subprocess.run(
                [*self._as_user, str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
