"""Every use of FastMCP's private code, written for fastmcp 4.2.3.

``FastMCP._on_list_resources``, its handler for resources/list, is overridden
(``PagedResources``): FastMCP's own builds every resource first and then
slices a page, while the transcripts come a page of jobs at a time from the
queue. Its resource listing has no public way to see the client's cursor
(its middleware is handed none), so the hook is fatal: without it the service
does not start.
"""

from __future__ import annotations

import functools

from fastmcp import FastMCP
from mcp import types as mcp_types
from mcp.server.context import ServerRequestContext

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
    """The hooks against the installed fastmcp; once per process."""
    return LIBRARY.examine()


class PagedResources(FastMCP):
    """FastMCP whose resources/list is answered by ``resource_page``."""

    async def resource_page(self, cursor: str | None) -> mcp_types.ListResourcesResult:
        """One page of resources from ``cursor`` (None: the first), with the next page's cursor."""
        raise NotImplementedError

    async def _on_list_resources(
        self, ctx: ServerRequestContext, params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListResourcesResult:
        return await self.resource_page(params.cursor if params else None)


__all__ = ["LIBRARY", "PagedResources", "check"]
