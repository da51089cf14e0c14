"""The real Codex CLI, configured with MONITOR.md's TOML block as written (only
HOST filled in), transcribes through MCP: ``codex exec`` calls ``health``,
``transcribe_wav`` with a committed clip, ``check_transcription_status``, and
the one-time URL flow, whose ``curl`` runs in Codex's own sandboxed shell.
The real server transcribes with tiny.en. Then, the server being required,
Codex stops in words without the token or without the service.

Codex's model is a stand-in: a small HTTP server speaking the OpenAI
Responses API (server-sent events) that scripts the tool calls from what
Codex sends back, and ends with the transcripts it received. Codex, the
stand-in and the server run in a network namespace (loopback only), with the
server on port 8765 as in the block. Codex comes from npm (cached; skipped
with the reason when npm cannot fetch it).

Run as a script, this file is the part inside the namespace."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from npm_clients import need_netns, npm_install, run_in_netns

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CODEX_VERSION = os.environ.get("WHISPER_MCP_TEST_CODEX_VERSION", "0.171.0")
TOKEN = "codex-test-token"
CLIP = "speech.opus"  # sent as base64 through transcribe_wav (21 KB)
RECORDING = "short.wav"  # uploaded by curl to a one-time URL
MAX_STEPS = 24  # the stand-in gives up after this many tool calls


def monitor_block() -> str:
    """The Codex TOML block of MONITOR.md, as written."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "MONITOR.md").read_text(), re.S)
    codex = [block for block in blocks if "[mcp_servers.whisper]" in block]
    assert len(codex) == 1, blocks
    return codex[0]


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()} - {""}


def test_readme_carries_the_same_block() -> None:
    readme = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert monitor_block().replace("HOST", "127.0.0.1") in readme


def test_codex_exec_transcribes_with_the_monitor_config(tmp_path: Path) -> None:
    need_netns()
    codex = npm_install("@openai/codex", CODEX_VERSION, "codex")
    workspace = tmp_path / "workspace"
    (workspace / "recordings").mkdir(parents=True)
    (workspace / "recordings" / RECORDING).write_bytes((FIXTURES / RECORDING).read_bytes())
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)  # a project folder, as Codex expects
    home = tmp_path / "codex-home"
    home.mkdir()
    # The block as written; only HOST is filled in (the namespace's own loopback).
    (home / "config.toml").write_text(monitor_block().replace("HOST", "127.0.0.1"))

    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    done = run_in_netns(
        [sys.executable, __file__, str(codex), str(home), str(workspace), str(tmp_path / "server"), str(report)],
        env=env,
        timeout=540,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    runs = json.loads(report.read_text())
    run, hidden = runs["with token"], runs["token unset"]
    context = json.dumps(run, indent=1)[-12000:]
    assert run["rc"] == 0, context

    # What Codex reports it did (codex exec --json): every MCP call ran, none
    # waiting for an approval, and the shell ran the upload.
    items = [e["item"] for e in run["events"] if e.get("type") == "item.completed"]
    calls = [i for i in items if i["type"] == "mcp_tool_call"]
    assert {c["tool"] for c in calls} == {
        "health",
        "transcribe_wav",
        "check_transcription_status",
        "create_upload_url",
    }, context
    assert all(c["server"] == "whisper" and c["status"] == "completed" and not c["error"] for c in calls), context
    shells = [i for i in items if i["type"] == "command_execution"]
    assert len(shells) == 1 and shells[0]["exit_code"] == 0, context
    assert "curl" in shells[0]["command"] and f"recordings/{RECORDING}" in shells[0]["command"], context
    assert '"status":"queued"' in shells[0]["aggregated_output"].replace(" ", ""), context

    # What came back to the model through Codex: the transcripts.
    assert not any("approval" in output for output in run["outputs"]), context
    finals = run["finished"]
    assert finals["codex-clip"]["status"] == "completed" and finals["codex-url"]["status"] == "completed", context
    clip_words = words(finals["codex-clip"]["transcript"])
    assert len(clip_words & words((FIXTURES / "speech.txt").read_text())) >= 10, finals
    assert {"hello", "world"} <= words(finals["codex-url"]["transcript"]), finals
    message = [i["text"] for i in items if i["type"] == "agent_message"][-1]
    assert finals["codex-clip"]["transcript"].strip() in message, message
    assert finals["codex-url"]["transcript"].strip() in message, message

    # The server is required (MONITOR.md): with WHISPER_MCP_TOKEN unset, or
    # the service away, Codex stops before asking the model, and says why.
    assert hidden["rc"] != 0 and not hidden["model_asked"], json.dumps(hidden)[-3000:]
    assert "required MCP servers failed to initialize: whisper" in hidden["stderr"], hidden["stderr"]
    assert "WHISPER_MCP_TOKEN for MCP server 'whisper' is not set" in hidden["stderr"], hidden["stderr"]
    away = runs["service away"]
    assert away["rc"] != 0 and not away["model_asked"], json.dumps(away)[-3000:]
    assert "required MCP servers failed to initialize: whisper" in away["stderr"], away["stderr"]


# -- inside the namespace -------------------------------------------------------


class StandIn:
    """A scripted model behind the Responses API. Codex sends the whole
    conversation each turn; the next step follows from the tool outputs in it."""

    def __init__(self, clip_base64: str) -> None:
        self.clip_base64 = clip_base64
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    # What the model does next, from the calls made so far and their outputs.
    def next_item(self, body: dict[str, Any]) -> dict[str, Any]:
        tools = offered_tools(body.get("tools", []))
        history = conversation(body.get("input", []))
        with self.lock:
            self.requests.append({"history": history})
        if len(history) >= MAX_STEPS:
            return message("Giving up: too many steps.")
        made = [name for name, _, _ in history]
        if history and not isinstance(history[-1][2], dict):  # an error, in words: stop there
            return message(f"{history[-1][0]} failed: {history[-1][2]}")
        if "health" not in made:
            return function_call(tools, "health", {})
        if "transcribe_wav" not in made:
            args = {"audio_base64": self.clip_base64, "filename": CLIP, "job_id": "codex-clip"}
            return function_call(tools, "transcribe_wav", args)
        clip = latest_status(history, "codex-clip")
        if clip is None or clip.get("status") in ("queued", "processing"):
            return function_call(tools, "check_transcription_status", {"job_id": "codex-clip", "wait_seconds": 45})
        if "create_upload_url" not in made:
            args = {"filename": RECORDING, "job_id": "codex-url"}
            return function_call(tools, "create_upload_url", args)
        if not any(name in SHELL_TOOLS for name in made):
            made_url = next(answer for name, _, answer in history if name == "create_upload_url")
            command = made_url["command"].replace("FILE", f"recordings/{RECORDING}")
            return shell_call(tools, command)
        url = latest_status(history, "codex-url")
        if url is None or url.get("status") in ("queued", "processing"):
            return function_call(tools, "check_transcription_status", {"job_id": "codex-url", "wait_seconds": 45})
        return message(
            f"Transcript of {CLIP}:\n{clip.get('transcript', clip.get('error'))}\n"
            f"Transcript of {RECORDING}:\n{url.get('transcript', url.get('error'))}"
        )


SHELL_TOOLS = ("exec_command", "shell_command", "shell")


def offered_tools(tools: list[dict[str, Any]]) -> dict[str, str | None]:
    """Tool name -> its namespace (None for a top-level tool)."""
    offered: dict[str, str | None] = {}
    for tool in tools:
        if tool.get("type") == "namespace":
            for inner in tool.get("tools", []):
                offered[inner["name"]] = tool["name"]
        elif tool.get("name"):
            offered[tool["name"]] = None
    return offered


def conversation(items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """(tool, arguments, answer) per call so far; answer is the JSON the tool
    returned, or its text when it is not JSON."""
    calls = {i["call_id"]: i for i in items if i.get("type") == "function_call"}
    history = []
    for item in items:
        if item.get("type") != "function_call_output" or item.get("call_id") not in calls:
            continue
        call = calls[item["call_id"]]
        history.append((call["name"], json.loads(call.get("arguments") or "{}"), answer_of(item.get("output"))))
    return history


def answer_of(output: Any) -> Any:
    if isinstance(output, list):  # content items
        output = "\n".join(part.get("text", "") for part in output if isinstance(part, dict))
    text = str(output)
    # Codex prefixes tool results with lines such as "Wall time: ...", then "Output:".
    body = text.split("Output:", 1)[1].strip() if "Output:" in text else text
    # The first JSON object in it (curl prints a progress meter around its answer).
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(body) if char == "{"):
        try:
            answer, _ = decoder.raw_decode(body, start)
        except ValueError:
            continue
        if isinstance(answer, dict):
            return answer
    return text


def latest_status(history: list[tuple[str, dict[str, Any], Any]], job_id: str) -> dict[str, Any] | None:
    for name, args, answer in reversed(history):
        if name == "check_transcription_status" and args.get("job_id") == job_id and isinstance(answer, dict):
            return answer
    return None


def function_call(tools: dict[str, str | None], name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if name not in tools:
        return message(f"The tool {name} is not available.")
    item: dict[str, Any] = {"type": "function_call", "name": name, "arguments": json.dumps(arguments)}
    if tools[name] is not None:
        item["namespace"] = tools[name]
    return item


def shell_call(tools: dict[str, str | None], command: str) -> dict[str, Any]:
    if "exec_command" in tools:
        return function_call(tools, "exec_command", {"cmd": command})
    if "shell_command" in tools:
        return function_call(tools, "shell_command", {"command": command})
    return function_call(tools, "shell", {"command": ["bash", "-lc", command]})


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def serve_stand_in(stand_in: StandIn) -> ThreadingHTTPServer:
    counter = iter(range(1, 10**6))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # e.g. a model list: there is none
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            n = next(counter)
            item = {"id": f"item_{n}", "call_id": f"call_{n}", "status": "completed", **stand_in.next_item(body)}
            events = [
                {"type": "response.created", "response": {"id": f"resp_{n}"}},
                {"type": "response.output_item.done", "output_index": 0, "item": item},
                {
                    "type": "response.completed",
                    "response": {
                        "id": f"resp_{n}",
                        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                    },
                },
            ]
            data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_codex(codex: Path, home: Path, workspace: Path, model_url: str, token: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_MCP_", "OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), WHISPER_MCP_URL="http://127.0.0.1:8765")
    if token is not None:
        env["WHISPER_MCP_TOKEN"] = token
    provider = f'{{name="stand-in", base_url="{model_url}", wire_api="responses"}}'
    argv = [
        str(codex), "exec", "--json",
        "-c", 'model="stand-in"', "-c", 'model_provider="stand-in"', "-c", f"model_providers.stand-in={provider}",
        f"Check the whisper service, transcribe the clip {CLIP} with transcribe_wav and "
        f"recordings/{RECORDING} through a one-time upload URL, and report both transcripts.",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=workspace, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"rc": done.returncode, "events": events, "stderr": done.stderr[-4000:]}


def inside(codex: Path, home: Path, workspace: Path, storage: Path, report: Path) -> None:
    from helpers import ServerProcess

    clip = base64.b64encode((FIXTURES / CLIP).read_bytes()).decode()
    storage.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        storage / "storage", storage / "server.log", port=8765, env=dict(os.environ, WHISPER_MCP_TOKEN=TOKEN)
    )
    server.start(headers={"Authorization": f"Bearer {TOKEN}"})
    runs: dict[str, Any] = {}
    try:
        stand_in = StandIn(clip)
        model = serve_stand_in(stand_in)
        model_url = f"http://127.0.0.1:{model.server_address[1]}/v1"
        run = run_codex(codex, home, workspace, model_url, TOKEN)
        history = stand_in.requests[-1]["history"] if stand_in.requests else []
        run["outputs"] = [json.dumps(answer) if not isinstance(answer, str) else answer for _, _, answer in history]
        run["finished"] = {job: latest_status(history, job) for job in ("codex-clip", "codex-url")}
        runs["with token"] = run

        def without_the_server(token: str | None) -> dict[str, Any]:
            stand_in.requests.clear()
            refused = run_codex(codex, home, workspace, model_url, token)
            refused["model_asked"] = bool(stand_in.requests)
            return refused

        runs["token unset"] = without_the_server(None)
        server.stop()
        runs["service away"] = without_the_server(TOKEN)
        model.shutdown()
    finally:
        server.stop()
        runs["server_log"] = server.log()[-4000:]
        report.write_text(json.dumps(runs))


if __name__ == "__main__":
    inside(*(Path(arg) for arg in sys.argv[1:6]))
