"""compat.httpx: httpx imported without its command-line tool (click, rich,
pygments), only for the version that hook was written for."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from whisper_mcp.compat import httpx as httpx_compat

from helpers import ROOT

PROBE = (
    "import sys\n"
    "from whisper_mcp.compat.httpx import skip_cli\n"
    "skipped = skip_cli()\n"
    "import httpx\n"
    "print(skipped, sys.modules.get('httpx._main') is not None, 'rich' in sys.modules, httpx.main.__module__)\n"
)


@pytest.mark.slow  # a fresh interpreter
def test_httpx_imports_without_its_command_line_tool() -> None:
    if importlib.metadata.version("httpx") != httpx_compat.WRITTEN_FOR:
        pytest.skip("another httpx: it imports as it likes (next test)")
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "httpx"]  # httpx's own stub main


def test_another_version_or_httpx_imported_already_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx  # noqa: F401  (imported already in this process)

    assert httpx_compat.skip_cli() is False
    monkeypatch.delitem(sys.modules, "httpx")
    monkeypatch.delitem(sys.modules, httpx_compat.CLI_MODULE, raising=False)
    monkeypatch.setattr(httpx_compat.importlib.metadata, "version", lambda name: "0.29.0")
    assert httpx_compat.skip_cli() is False
    assert httpx_compat.CLI_MODULE not in sys.modules
