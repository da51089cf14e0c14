"""httpx: its command-line tool left unimported.

httpx's ``__init__`` imports its command-line client (``httpx._main``, with
click, rich and pygments) whenever those are installed, as they are beside
fastmcp: about 40 ms and 4 MiB in every server and client process that never
runs ``httpx`` from a shell. Where that import fails, httpx defines a stub
``main`` instead (``except ImportError``), so marking the module absent
before httpx is first imported skips it. Only for the version this was
written for, read from its metadata without importing it: another version
imports as it likes.
"""

from __future__ import annotations

import importlib.metadata
import sys

WRITTEN_FOR = "0.28.1"
CLI_MODULE = "httpx._main"


def skip_cli() -> bool:
    """Whether httpx, not yet imported, will now import without its command-line client."""
    if "httpx" in sys.modules or CLI_MODULE in sys.modules:
        return False
    try:
        if importlib.metadata.version("httpx") != WRITTEN_FOR:
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    sys.modules[CLI_MODULE] = None  # type: ignore[assignment]  # import raises ImportError: httpx's stub main
    return True


__all__ = ["skip_cli"]
