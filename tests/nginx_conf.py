"""deploy/nginx/whisper-mcp.conf, the one nginx configuration the docs and
deploy/compose.yaml use, pointed at replicas on loopback ports for a test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from helpers import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx" / "whisper-mcp.conf"
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
UPSTREAM = re.compile(r"^\s*server\s+([\w.-]+):8765\b", re.M)


def upstream_hosts() -> list[str]:
    """The replicas' host names in the configuration's upstream."""
    return UPSTREAM.findall(NGINX_CONF.read_text())


def nginx_files(folder: Path, port: int, upstream_ports: list[int]) -> Path:
    """The configuration pointed at these replicas and this port, included
    from a minimal nginx.conf as Debian's includes conf.d/*.conf; the main file."""
    folder.mkdir(parents=True, exist_ok=True)
    text = NGINX_CONF.read_text()
    servers = [m.group(0) for m in UPSTREAM.finditer(text)]
    assert len(servers) == len(upstream_ports), servers
    for line, upstream in zip(servers, upstream_ports, strict=True):
        text = text.replace(line, re.sub(r"[\w.-]+:8765", f"127.0.0.1:{upstream}", line), 1)
    text, listens = re.subn(r"^(\s*)listen\s+80;", rf"\g<1>listen 127.0.0.1:{port};", text, flags=re.M)
    assert listens == 1, text
    (folder / "whisper-mcp.conf").write_text(text)
    main = folder / "nginx.conf"
    main.write_text(
        f"worker_processes 1;\npid {folder}/nginx.pid;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  include {folder}/whisper-mcp.conf;\n}}\n"
    )
    return main


def nginx_flags(folder: Path, main: Path) -> list[str]:
    return ["-p", str(folder), "-e", str(folder / "error.log"), "-c", str(main)]


def check_nginx(folder: Path, main: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the files ``nginx_files`` wrote."""
    assert NGINX is not None
    return subprocess.run([NGINX, "-t", *nginx_flags(folder, main)], capture_output=True, text=True)


def start_nginx(folder: Path, port: int, upstream_ports: list[int]) -> subprocess.Popen[bytes]:
    """nginx with the configuration (checked with ``nginx -t`` first), once it answers."""
    main = nginx_files(folder, port, upstream_ports)
    check = check_nginx(folder, main)
    assert check.returncode == 0, check.stderr  # the configuration is valid nginx
    assert NGINX is not None
    proc = subprocess.Popen([NGINX, *nginx_flags(folder, main), "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (folder / "error.log").read_text()
        time.sleep(0.05)
