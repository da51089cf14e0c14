"""The server's heap settings (whisper_mcp.heap): one arena and a fixed mmap
threshold, each unless the environment sets it."""

from __future__ import annotations

import sys

import pytest

from whisper_mcp.heap import ARENA_ENV, ARENA_MAX, ENV, MMAP_THRESHOLD, tune_heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_threshold_and_arenas_are_set_on_glibc() -> None:
    # Set again in this test process, they change only where later threads'
    # blocks come from.
    assert tune_heap({}) == {ENV: MMAP_THRESHOLD, ARENA_ENV: ARENA_MAX}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_each_environment_setting_is_left_alone() -> None:
    assert tune_heap({ENV: "65536"}) == {ARENA_ENV: ARENA_MAX}
    assert tune_heap({ARENA_ENV: "2"}) == {ENV: MMAP_THRESHOLD}
    assert tune_heap({ENV: "65536", ARENA_ENV: "2"}) == {}
