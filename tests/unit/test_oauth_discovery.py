"""No accidental OAuth: the places OAuth clients look for metadata answer 404
(RFC 9728 and RFC 8414: no such metadata) without a token, so MCP clients send
the configured bearer token instead of starting an OAuth flow; everything
else still needs the token. In process, over a fake engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import InProcessServer

TOKEN = "s3cret-token"

# Where the MCP SDKs' clients look: RFC 9728 with and without the resource's
# path, RFC 8414 and OpenID discovery at the root, with the path inserted and
# appended.
DISCOVERY_PATHS = [
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp",
    "/mcp/.well-known/openid-configuration",
]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path_factory.mktemp("oauth") / "storage", token=TOKEN) as srv:
        yield srv


@pytest.mark.parametrize("path", DISCOVERY_PATHS)
def test_discovery_answers_404_without_a_token(token_server: InProcessServer, path: str) -> None:
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(token_server.url + path, headers={"MCP-Protocol-Version": "2025-06-18", **headers})
        assert response.status_code == 404, (path, headers, response.text)
        message = response.json()["error"]["message"]
        assert "bearer token" in message and "OAuth" in message
        assert "www-authenticate" not in response.headers


def test_everything_else_still_needs_the_token(token_server: InProcessServer) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    refused = httpx.post(f"{token_server.url}/mcp", json=initialize, headers=headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    for path in ("/health", "/jobs", "/.well-known/other", "/.well-known/oauth-protected-resource-x"):
        assert httpx.get(token_server.url + path).status_code == 401, path
    assert httpx.get(f"{token_server.url}/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_server_without_a_token_answers_404_too(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage") as srv:
        for path in DISCOVERY_PATHS:
            assert httpx.get(srv.url + path).status_code == 404, path
            assert httpx.post(srv.url + path).status_code == 404, path
