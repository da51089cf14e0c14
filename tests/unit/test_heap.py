"""The server's heap settings (whisper_mcp.heap): one arena and a fixed mmap
threshold, each unless the environment sets it. glibc's ``mallopt`` is
recorded here, not called: the settings would stay in this test process."""

from __future__ import annotations

from whisper_mcp.heap import ARENA_ENV, ARENA_MAX, ENV, MMAP_THRESHOLD, tune_heap

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # malloc.h


def recorded(environ: dict[str, str]) -> tuple[dict[str, int], list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    return tune_heap(environ, mallopt), calls


def test_threshold_and_arenas_are_set() -> None:
    assert recorded({}) == (
        {ENV: MMAP_THRESHOLD, ARENA_ENV: ARENA_MAX},
        [(M_MMAP_THRESHOLD, 32 * 1024 * 1024), (M_ARENA_MAX, 1)],
    )


def test_each_environment_setting_is_left_alone() -> None:
    assert recorded({ENV: "65536"}) == ({ARENA_ENV: ARENA_MAX}, [(M_ARENA_MAX, 1)])
    assert recorded({ARENA_ENV: "2"}) == ({ENV: MMAP_THRESHOLD}, [(M_MMAP_THRESHOLD, 32 * 1024 * 1024)])
    assert recorded({ENV: "65536", ARENA_ENV: "2"}) == ({}, [])


def test_a_setting_glibc_refuses_is_not_reported_made() -> None:
    assert tune_heap({}, lambda param, value: 0) == {}
