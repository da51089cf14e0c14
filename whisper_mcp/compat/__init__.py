"""Borrowed hooks: every use of a pinned library's private code, one module
per library, each beside the version it was written for and the names it
relies on (``hooks``)."""

from whisper_mcp.compat.hooks import Check, IncompatibleLibrary

__all__ = ["Check", "IncompatibleLibrary"]
