"""Every use of FastMCP's private code, written for fastmcp 4.2.3.

``FastMCP._on_list_resources``, its handler for resources/list, is overridden
(``paged.PagedResources``): FastMCP's own builds every resource first and
then slices a page, while the transcripts come a page of jobs at a time from
the queue. Its resource listing has no public way to see the client's cursor
(its middleware is handed none), so the hook is fatal: without it the service
does not start.

fastmcp is imported when the first MCP request arrives (``server.mcp_endpoint``),
so this module imports nothing of it: start-up reads the installed version
(``LIBRARY``) and looks the names up only where that version is not the one
written for; the override itself is in ``paged``.
"""

from __future__ import annotations

import functools

from whisper_mcp.compat.hooks import Check, Hook, Library

LIBRARY = Library(
    "fastmcp",
    "4.2.3",
    (
        Hook(
            "_on_list_resources",
            "resources/list answered a page of jobs at a time from the queue",
            (
                "fastmcp:FastMCP._on_list_resources(self, ctx, params)",
                # ... and still registered as the handler, by the method's name.
                "fastmcp:FastMCP._setup_handlers[_on_list_resources]",
            ),
        ),
    ),
)


@functools.cache
def check() -> Check:
    """The hooks against the installed fastmcp (imports it); once per process."""
    return LIBRARY.examine()


def check_at_start_up() -> Check:
    """The version alone where it is the one written for (the names were
    checked against it, tests/unit/test_compat.py); else every name, which
    imports fastmcp."""
    found = LIBRARY.check_version()
    return found if found.found == LIBRARY.written_for else check()


__all__ = ["LIBRARY", "check", "check_at_start_up"]
