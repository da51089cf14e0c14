"""Byte-range bookkeeping of chunked uploads (pure functions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from whisper_mcp.server.uploads import merge_range, missing, overlaps


def test_merge_adjacent_and_overlapping() -> None:
    assert merge_range([], 0, 10) == [(0, 10)]
    assert merge_range([(0, 10)], 10, 20) == [(0, 20)]
    assert merge_range([(0, 10), (20, 30)], 5, 25) == [(0, 30)]
    assert merge_range([(20, 30)], 0, 10) == [(0, 10), (20, 30)]


def test_missing_and_overlaps() -> None:
    assert missing([(0, 10), (20, 30)], 40) == [(10, 20), (30, 40)]
    assert missing([(0, 40)], 40) == []
    assert missing([], 5) == [(0, 5)]
    assert overlaps([(0, 10), (20, 30)], 5, 25) == [(5, 10), (20, 25)]
    assert overlaps([(0, 10)], 10, 20) == []


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 100)), max_size=30))
def test_ranges_cover_exactly_what_was_sent(chunks: list[tuple[int, int]]) -> None:
    ranges: list[tuple[int, int]] = []
    covered: set[int] = set()
    for start, length in chunks:
        ranges = merge_range(ranges, start, start + length)
        covered |= set(range(start, start + length))
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))  # disjoint, not touching
    assert {i for a, b in ranges for i in range(a, b)} == covered
    gaps = missing(ranges, 700)
    assert {i for a, b in gaps for i in range(a, b)} == set(range(700)) - covered
