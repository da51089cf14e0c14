"""``--decoder-threads auto``: one thread on few cores by rule; on more cores
timed once, cached, and the choice logged with its reason."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pytest

from whisper_mcp.config import ConfigError, Settings
from whisper_mcp.engines import decoder_threads as rule


def test_the_setting_reads_auto_or_a_count() -> None:
    assert Settings.from_env({}).decoder_threads == rule.AUTO  # the default
    assert Settings.from_env({"WHISPER_MCP_DECODER_THREADS": "AUTO"}).decoder_threads == rule.AUTO
    assert Settings.from_env({}, decoder_threads="3").decoder_threads == 3
    assert Settings.from_env({}, decoder_threads="0").decoder_threads == 0  # the same as --threads
    with pytest.raises(ConfigError, match="--decoder-threads='many': must be auto or a whole number"):
        Settings.from_env({}, decoder_threads="many")


def test_candidates_double_up_to_every_core() -> None:
    assert rule.candidates(2) == [1, 2]
    assert rule.candidates(6) == [1, 2, 4, 6]
    assert rule.candidates(16) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [
        ({1: 1.00, 2: 0.97, 4: 0.99}, 1),  # within the margin: fewer threads
        ({1: 1.00, 2: 0.80, 4: 0.78}, 2),  # 4 beats 2 by under 5 %
        ({1: 1.00, 2: 0.90, 4: 0.50, 8: 0.60}, 4),
    ],
)
def test_more_threads_must_win_by_the_margin(seconds: dict[int, float], chosen: int) -> None:
    assert rule.fastest(seconds) == chosen


class Timer:
    def __init__(self, seconds: dict[int, float]) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, counts: Iterable[int]) -> dict[int, float]:
        self.calls += 1
        return {n: self.seconds[n] for n in counts}


def test_few_cores_take_the_rule_without_timing(tmp_path: Path) -> None:
    timer = Timer({})
    count, why = rule.choose(4, "tiny.en|int8", tmp_path / "cache.json", timer)
    assert (count, timer.calls) == (1, 0)
    assert "the rule up to 4 cores" in why
    assert not (tmp_path / "cache.json").exists()


def test_many_cores_time_once_then_read_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "models" / "decoder-threads.json"
    timer = Timer({1: 0.30, 2: 0.20, 4: 0.21, 8: 0.25})
    count, why = rule.choose(8, "tiny.en|int8|8 cores", cache, timer)
    assert (count, timer.calls) == (2, 1)
    assert why.startswith("measured now on 8 cores (1 threads 300 ms, 2 threads 200 ms")
    assert json.loads(cache.read_text())["tiny.en|int8|8 cores"]["threads"] == 2
    count, why = rule.choose(8, "tiny.en|int8|8 cores", cache, Timer({}))  # would fail if it timed again
    assert count == 2 and why.startswith("measured before on this machine")
    # Another model (or machine, or ctranslate2) is timed anew, beside the first.
    assert rule.choose(8, "base|int8|8 cores", cache, Timer({1: 0.2, 2: 0.3, 4: 0.3, 8: 0.3}))[0] == 1
    assert set(json.loads(cache.read_text())) == {"tiny.en|int8|8 cores", "base|int8|8 cores"}


def test_a_cache_that_cannot_be_written_costs_a_timing_not_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "decoder-threads.json"
    with caplog.at_level(logging.WARNING):
        assert rule.choose(16, "k", cache, Timer({1: 1.0, 2: 0.5, 4: 0.5, 8: 0.5, 16: 0.5}))[0] == 2
    assert "could not cache the measurement" in caplog.text
    (tmp_path / "bad.json").write_text("{not json")
    assert rule.choose(16, "k", tmp_path / "bad.json", Timer({1: 0.5, 2: 1, 4: 1, 8: 1, 16: 1}))[0] == 1


def test_the_engine_settles_auto_and_logs_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("faster_whisper")
    from whisper_mcp.engines.ctranslate2 import CTranslate2Backend
    from whisper_mcp.models.registry import ModelRegistry

    registry = ModelRegistry(tmp_path, engine="ctranslate2")
    with caplog.at_level(logging.INFO, logger="whisper_mcp.engines.ctranslate2"):
        few = CTranslate2Backend(registry, "cpu", threads=2, decoder_threads=rule.AUTO)
    assert few.decoder_threads == 1
    assert "decoder threads: 1 (--decoder-threads auto: 2 cores: one decoder thread" in caplog.text
    # Many cores: the count is timed on the first model loaded (here the timer is faked).
    timed: list[tuple[str, str, int]] = []

    def timer(folder: Path, compute_type: str, beam: int) -> Timer:
        timed.append((folder.name, compute_type, beam))
        return Timer({1: 0.3, 2: 0.2, 4: 0.1, 8: 0.2, 16: 0.3})

    monkeypatch.setattr(rule, "timer", timer)
    many = CTranslate2Backend(registry, "cpu", threads=16, decoder_threads=rule.AUTO)
    with caplog.at_level(logging.INFO, logger="whisper_mcp.engines.ctranslate2"):
        many._settle_decoder_threads(tmp_path / "tiny.en")
    assert (many.decoder_threads, timed) == (4, [("tiny.en", "int8", 2)])
    assert "decoder threads: 4 (--decoder-threads auto: measured now on 16 cores" in caplog.text
    assert CTranslate2Backend(registry, "cpu", threads=16, decoder_threads=3).decoder_threads == 3
