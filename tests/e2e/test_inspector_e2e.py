"""MCP Inspector's CLI, run exactly as docs/mcp.md documents it, against a
server with a token and one without: it lists the tools and calls one
instead of starting OAuth. Inspector comes from npm (cached; skipped with the
reason when npm cannot fetch it) and runs in a network namespace with the
server on 127.0.0.1:8765, as in docs/mcp.md.

Run as a script, this file is the part inside the namespace: it serves the
app (over a fake engine) on port 8765 and runs the documented commands."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from npm_clients import need_netns, npm_env, npx_warm, run_in_netns

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "inspector-test-token"
TOOLS = {
    "transcribe_wav", "create_upload_url", "begin_upload", "upload_chunk", "check_transcription_status",
    "cancel_transcription", "list_transcription_jobs", "list_models", "health",
}  # fmt: skip
# Where Inspector's SDK looks when a server answers 401.
DISCOVERY = (
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)


def documented_commands() -> tuple[str, str]:
    """docs/mcp.md's two Inspector command lines: for a server with a token, and without."""
    lines = [
        line.strip()
        for line in (ROOT / "docs" / "mcp.md").read_text().splitlines()
        if line.strip().startswith("npx -y @modelcontextprotocol/inspector")
    ]
    with_token = [line for line in lines if "Authorization: Bearer $WHISPER_MCP_TOKEN" in line]
    without = [line for line in lines if "--header" not in line]
    assert len(lines) == 2 and len(with_token) == 1 and len(without) == 1, lines
    return with_token[0], without[0]


def test_inspector_cli_as_the_docs_say(tmp_path: Path) -> None:
    need_netns()
    with_token, without = documented_commands()
    spec = shlex.split(with_token)[2]  # npx -y SPEC ...
    assert spec.startswith("@modelcontextprotocol/inspector")
    npx_warm(spec, "--cli", "--version")  # with network; inside the namespace npx finds it cached
    report = tmp_path / "report.json"
    env = npm_env(npm_config_offline="true", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    done = run_in_netns(
        [sys.executable, __file__, str(report), str(tmp_path / "storage")], env=env, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(report.read_text())

    # Tools listed and a tool called, with the token, on the server that needs it.
    listed = runs["token server, documented command"]
    assert listed["rc"] == 0, listed
    assert {tool["name"] for tool in json.loads(listed["stdout"])["tools"]} == TOOLS
    called = runs["token server, tools/call health"]
    assert called["rc"] == 0, called
    answer = json.loads(called["stdout"])
    assert answer["isError"] is False and answer["structuredContent"]["model_loaded"] is True, answer
    # And without a token on a server without one.
    open_listed = runs["open server, documented command"]
    assert open_listed["rc"] == 0, open_listed
    assert {tool["name"] for tool in json.loads(open_listed["stdout"])["tools"]} == TOOLS
    # Without the header the token server refuses, and Inspector says so and
    # stops: it never gets OAuth metadata to act on (the discovery paths
    # answered 404, not 401).
    refused = runs["token server, no header"]
    assert refused["rc"] != 0, refused
    assert "auth" in (refused["stdout"] + refused["stderr"]).lower(), refused
    assert set(runs["discovery"].values()) == {404}, runs["discovery"]


def _inside(report: Path, storage: Path) -> None:
    """In the namespace: serve on 127.0.0.1:8765 and run the documented commands."""
    import httpx

    from helpers import InProcessServer

    with_token, without = documented_commands()
    runs: dict[str, object] = {}

    def run(name: str, line: str, token: str | None) -> None:
        env = dict(os.environ)
        env.pop("WHISPER_MCP_TOKEN", None)
        if token is not None:
            env["WHISPER_MCP_TOKEN"] = token
        done = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=120)
        runs[name] = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-3000:]}

    with InProcessServer.start(storage / "token", port=8765, token=TOKEN):
        run("token server, documented command", with_token, TOKEN)
        run(
            "token server, tools/call health",
            with_token.replace("--method tools/list", "--method tools/call --tool-name health"),
            TOKEN,
        )
        run("token server, no header", without, TOKEN)
        runs["discovery"] = {path: httpx.get(f"http://127.0.0.1:8765{path}").status_code for path in DISCOVERY}
    with InProcessServer.start(storage / "open", port=8765):
        run("open server, documented command", without, None)
    report.write_text(json.dumps(runs))


if __name__ == "__main__":
    _inside(Path(sys.argv[1]), Path(sys.argv[2]))
