"""Borrowed hooks: every use of a pinned library's private code, one module
per library, each beside the version it was written for and the names it
relies on (``hooks``):

* ``faster_whisper``: progress patches, the ramped VAD batches, the model
  stand-ins of the encoder apart and of batched first windows;
* ``openai_whisper``: progress patches, streamed features, each window's
  segments;
* ``senko``: its pipeline's steps one by one, speaker count hints;
* ``fastmcp``: resources/list a page of jobs at a time;
* ``uvicorn``: the connection guards.

At start-up each library the configured service uses is checked: uvicorn
by ``verify``; fastmcp and senko, imported only when first used (the first
MCP request, the first diarized job), by their version there and by name
when first loaded, or at once by name where the version is not the one
written for; the engine's Whisper library when its backend is built
(``install``). A hook whose names are gone either stops start-up,
naming the library, the hook and the version to install, or gives way to a
public path, logged and listed under ``compat`` in /health (``lost``). A
version other than the one written for, with every name present, starts
with a logged warning.
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
# Imported by every server at start-up.
_SERVER_LIBRARIES = ("uvicorn",)
# Imported when first used (the MCP stack, or senko and torch): their version
# alone at start-up, when it is the one written for.
_LATER = ("fastmcp", "senko")


def verify() -> list[Check]:
    """Check the hooks into the libraries every server imports at start-up,
    and the versions of those imported later (by name, at once, where the
    version differs): ``IncompatibleLibrary`` naming each fatal mismatch, else
    the fallbacks and other versions logged."""
    checks = [_module(name).check() for name in _SERVER_LIBRARIES]
    for name in _LATER:
        version = _module(name).LIBRARY.check_version()
        written_for = version.found in (None, version.written_for)
        checks.append(version if written_for else _module(name).check())
    report(checks, log)
    return checks


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{name}")


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
