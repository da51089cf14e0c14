"""Junk chunked-upload ids from a client keep nothing in the server: a real
server process, a real MCP client, 2.5 MB ids, the process's resident memory
read from /proc before and after (what the issue measured: it used to grow by
hundreds of MB, a lock per id that was never dropped)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from helpers import ServerProcess

pytestmark = pytest.mark.e2e

ID_BYTES = 2_500_000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def send_junk(url: str, count: int) -> None:
    async with Client(f"{url}/mcp") as mcp:
        for _ in range(count):
            junk = uuid.uuid4().hex * (ID_BYTES // 32)  # unique each time, as in the report
            with pytest.raises(ToolError, match="No open upload"):
                await mcp.call_tool("upload_chunk", {"upload_id": junk, "offset": 0, "data_base64": "AAAA"})


@pytest.mark.anyio
async def test_memory_stays_flat_under_junk_upload_ids(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "storage", tmp_path / "server.log") as server:
        # Warm up: the allocator settles at its high-water mark for 2.5 MB requests.
        await send_junk(server.url, 20)
        before = rss_mib(server.pid)
        await send_junk(server.url, 100)  # 250 MB of ids
        after = rss_mib(server.pid)
    # Per-id state would be >= 250 MB here; transient request buffers are reused.
    assert after - before < 64, (before, after)
