"""The server's heap setting (whisper_mcp.heap): glibc's mmap threshold fixed,
unless the environment sets it."""

from __future__ import annotations

import sys

import pytest

from whisper_mcp.heap import ENV, MMAP_THRESHOLD, fix_mmap_threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_threshold_is_fixed_on_glibc() -> None:
    # glibc's own starting value: setting it again in this test process changes
    # only that it no longer rises after frees.
    assert fix_mmap_threshold({}) == MMAP_THRESHOLD


def test_environment_setting_is_left_alone() -> None:
    assert fix_mmap_threshold({ENV: "65536"}) is None
