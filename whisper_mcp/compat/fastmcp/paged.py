"""The resources/list override (see the package's docstring): imports fastmcp."""

from __future__ import annotations

from fastmcp import FastMCP
from mcp import types as mcp_types
from mcp.server.context import ServerRequestContext


class PagedResources(FastMCP):
    """FastMCP whose resources/list is answered by ``resource_page``."""

    async def resource_page(self, cursor: str | None) -> mcp_types.ListResourcesResult:
        """One page of resources from ``cursor`` (None: the first), with the next page's cursor."""
        raise NotImplementedError

    async def _on_list_resources(
        self, ctx: ServerRequestContext, params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListResourcesResult:
        return await self.resource_page(params.cursor if params else None)


__all__ = ["PagedResources"]
