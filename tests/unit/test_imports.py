"""What importing costs: the client, the CLI and the queue stay torch-free, the
engine backends do not import each other, and the torch-free language table
matches Whisper's."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

ENGINES = ROOT / "whisper_mcp" / "engines"
# The inference backends; only whisper_mcp/transcriber.py chooses between them.
BACKENDS = {"openai", "ctranslate2", "openai_batch"}
# openai_batch is the openai backend's own batched first-window decoding.
OWN_HELPERS = {("openai", "openai_batch")}

TORCH_FREE = [
    "whisper_mcp.client.http",
    "whisper_mcp.client.console",
    "whisper_mcp.client.cli",
    "whisper_mcp.client.watch",
    "whisper_mcp.client.bridge",
    "whisper_mcp.cli",
    "whisper_mcp.queue.jobs",
    "whisper_mcp.queue.sqlite",
    "whisper_mcp.queue.files",
    "whisper_mcp.queue.objects",
    "whisper_mcp.queue.manager",
    "whisper_mcp.queue.opening",
]


@pytest.mark.slow  # a fresh interpreter
def test_client_cli_and_queue_import_without_torch() -> None:
    """One fresh interpreter imports each module in turn and notes what each
    one added: a module that pulls in torch (or whisper) is named."""
    code = (
        "import importlib, json, sys\n"
        "heavy = {}\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "    heavy[name] = sorted(m for m in ('torch', 'whisper') if m in sys.modules)\n"
        "print(json.dumps(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout)
    assert list(heavy) == TORCH_FREE
    assert heavy == {name: [] for name in TORCH_FREE}, heavy


def engines_imported_by(path: Path) -> set[str]:
    """The modules of whisper_mcp.engines that ``path`` imports, however spelled
    (``import a.b``, ``from a.b import c``, ``from a import b``, relative)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to whisper_mcp.engines
                base = "whisper_mcp.engines" + ("." + node.module if node.module else "")
            else:
                base = node.module or ""
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["whisper_mcp", "engines"] and len(parts) > 2:
                found.add(parts[2])
    return found


def test_import_finder_sees_every_spelling(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import whisper_mcp.engines.openai\n"
        "from whisper_mcp.engines.ctranslate2 import X\n"
        "from whisper_mcp.engines import openai_batch, base\n"
        "from . import progress\n"
        "from .mel import Mel\n"
        "def f():\n    import whisper_mcp.engines.audio as a\n"
    )
    assert engines_imported_by(source) == {"openai", "ctranslate2", "openai_batch", "base", "progress", "mel", "audio"}


def test_no_engine_module_imports_another_backend() -> None:
    """Circles and arrows up are test_layering's; this is the finer rule inside engines/."""
    graph = {path.stem: engines_imported_by(path) for path in ENGINES.glob("*.py")}
    assert BACKENDS <= set(graph), sorted(graph)
    for module, imported in graph.items():
        wrong = {b for b in imported & BACKENDS if (module, b) not in OWN_HELPERS and b != module}
        assert not wrong, f"whisper_mcp/engines/{module}.py imports the backend(s) {sorted(wrong)}"


def test_language_table_matches_whisper() -> None:
    import whisper.tokenizer

    import whisper_mcp.languages

    assert whisper_mcp.languages.LANGUAGES == whisper.tokenizer.LANGUAGES
    assert whisper_mcp.languages.TO_LANGUAGE_CODE == whisper.tokenizer.TO_LANGUAGE_CODE


@pytest.mark.slow  # a fresh interpreter and the real model
def test_the_ctranslate2_service_never_imports_torch(tmp_path: Path) -> None:
    """torch costs ~400 MB of memory: the service on the ctranslate2 engine
    builds its app, loads its model and transcribes without it; nor does it
    import the MCP stack (0.6 s, 40 MiB) before an MCP request, pydantic
    before /openapi.json, or httpx's command-line tool (rich) at all."""
    code = (
        "import sys\n"
        "import whisper_mcp.cli\n"  # first, as the command line imports it
        "from pathlib import Path\n"
        "from whisper_mcp.config import Settings\n"
        "from whisper_mcp.options import TranscribeOptions\n"
        "from whisper_mcp.server.app import build_engine, build_service, create_app\n"
        f"settings = Settings.from_env({{}}, engine='ctranslate2', storage={str(tmp_path / 'storage')!r})\n"
        "engine = build_engine(settings)\n"
        "create_app(settings, build_service(settings, engine))\n"
        "info = engine.registry.resolve(settings.model, trusted=True)\n"
        f"text = engine.transcribe(Path({str(ROOT / 'tests' / 'fixtures' / 'speech.wav')!r}), info, TranscribeOptions()).text\n"
        "print(repr(text))\n"
        "heavy = ('torch', 'whisper', 'fastmcp', 'mcp', 'pydantic', 'httpx._main', 'rich')\n"
        "print(sorted(m for m in heavy if sys.modules.get(m) is not None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text, heavy = result.stdout.strip().splitlines()[-2:]
    assert "meeting" in text.lower(), text
    assert heavy == "[]", f"imported with engine ctranslate2: {heavy}"


@pytest.mark.slow  # fresh interpreters
@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_refused_database_stops_before_the_web_and_mcp_stacks(tmp_path: Path, command: str) -> None:
    """The job database is opened first: a damaged one is refused in its
    sentence before a second goes into importing Starlette, FastMCP or a
    model's libraries, and ``migrate`` never imports them at all."""
    (tmp_path / "storage" / "jobs.sqlite3").mkdir(parents=True)  # a folder where the file belongs
    code = (
        "import json, sys\n"
        "from whisper_mcp import cli\n"
        "try:\n"
        f"    cli.main([{command!r}, '--storage', {str(tmp_path / 'storage')!r}])\n"
        "except SystemExit as exc:\n"
        "    said = str(exc)\n"
        "heavy = ('starlette', 'fastmcp', 'mcp', 'uvicorn', 'torch', 'ctranslate2', 'whisper_mcp.server')\n"
        "print(json.dumps([said, sorted(m for m in heavy if m in sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    said, heavy = json.loads(result.stdout)
    assert said.startswith("whisper-mcp: error: The job database ") and "is a folder, not a file" in said, said
    assert heavy == [], heavy
