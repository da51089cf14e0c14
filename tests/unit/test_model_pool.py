"""ModelPool: lazy loading, LRU eviction under a budget, idle unloading."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from whisper_mcp.config import default_model_cache
from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.models.pool import ModelPool, estimate_bytes, model_bytes
from whisper_mcp.models.registry import ModelInfo, ModelRegistry

from helpers import FIXTURES, words

if TYPE_CHECKING:
    import torch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRegistry:
    """``load`` returns a module of ``sizes[name]`` bytes and records what the
    pool held at that moment, to check eviction happens before loading."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.calls: list[str] = []
        self.held_at_load: list[list[str]] = []
        self.pool: ModelPool | None = None
        self.gate: threading.Event | None = None  # when set, load waits on it

    def load(self, info: ModelInfo, device: str) -> torch.nn.Module:
        if self.gate is not None:
            assert self.gate.wait(5)
        self.calls.append(info.name)
        if self.pool is not None:
            self.held_at_load.append([m.name for m in self.pool.loaded()])
        import torch  # here: an xdist worker that only collects this file need not import it

        module = torch.nn.Module()
        module.register_buffer("blob", torch.zeros(self.sizes[info.name], dtype=torch.uint8))
        return module


def info(name: str) -> ModelInfo:
    return ModelInfo(name, "fake", True)


def make_pool(sizes: dict[str, int], **kwargs: object) -> tuple[ModelPool, FakeRegistry, FakeClock]:
    registry, clock = FakeRegistry(sizes), FakeClock()
    kwargs.setdefault("pinned", None)
    pool = ModelPool(registry, "cpu", clock=clock, **kwargs)  # type: ignore[arg-type]
    registry.pool = pool
    return pool, registry, clock


def names(pool: ModelPool) -> list[str]:
    return [m.name for m in pool.loaded()]


def test_loads_lazily_and_once() -> None:
    pool, registry, clock = make_pool({"a": 100})
    assert pool.loaded() == [] and registry.calls == []
    first = pool.get(info("a"))
    clock.now += 5
    with pool.use(info("a")) as second:
        assert second is first
    assert registry.calls == ["a"]
    assert (pool.loads, pool.unloads) == (1, 0)
    [snapshot] = pool.loaded()
    assert (snapshot.name, snapshot.bytes, snapshot.pinned) == ("a", 100, False)
    assert snapshot.loaded_at == 1000.0 and snapshot.last_used == 1005.0


def test_lru_eviction_under_budget() -> None:
    pool, registry, clock = make_pool({"a": 100, "b": 100, "c": 100}, memory_budget_bytes=250)
    pool.get(info("a"))
    clock.now += 1
    pool.get(info("b"))
    clock.now += 1
    pool.get(info("a"))  # a is now more recent than b
    clock.now += 1
    # c's size is unknown before its first load, so the budget is enforced
    # right after it; b, least recently used, goes.
    pool.get(info("c"))
    assert names(pool) == ["a", "c"]
    clock.now += 1
    # b's size is remembered: room is made *before* it loads. a is LRU now.
    pool.get(info("b"))
    assert registry.held_at_load[-1] == ["c"]
    assert names(pool) == ["b", "c"]
    assert registry.calls == ["a", "b", "c", "b"]
    assert (pool.loads, pool.unloads) == (4, 2)


def test_estimate_used_before_first_load() -> None:
    # A named Whisper model's size is known from its shapes before loading.
    tiny = estimate_bytes(ModelInfo("tiny.en", "packaged", True))
    assert 140e6 < tiny < 160e6
    pool, registry, _ = make_pool({"tiny.en": 10, "x": 10}, memory_budget_bytes=tiny + 5)
    pool.get(info("x"))
    pool.get(ModelInfo("tiny.en", "fake", True))
    assert registry.held_at_load[-1] == []  # x went before tiny.en loaded
    assert names(pool) == ["tiny.en"]


def test_pinned_never_evicted(caplog: pytest.LogCaptureFixture) -> None:
    pool, _, clock = make_pool({"p": 100, "b": 100, "c": 100}, pinned="p", memory_budget_bytes=250)
    pool.get(info("p"))
    clock.now += 1
    pool.get(info("b"))
    clock.now += 1
    pool.get(info("c"))  # p is the LRU, but pinned: b goes
    assert names(pool) == ["c", "p"]
    assert [m.pinned for m in pool.loaded()] == [False, True]
    assert not pool.unload("p")
    clock.now += 10_000
    assert pool.sweep() == ["c"]
    # A budget that not even the pinned model fits: load anyway, and warn.
    pool.memory_budget_bytes = 150
    with caplog.at_level(logging.WARNING, logger="whisper_mcp.models.pool"):
        pool.get(info("b"))
    assert names(pool) == ["b", "p"]
    assert "budget" in caplog.text


def test_idle_sweep() -> None:
    pool, _, clock = make_pool({"a": 1, "b": 1, "p": 1}, pinned="p", idle_seconds=60)
    for name in ("p", "a", "b"):
        pool.get(info(name))
    clock.now += 30
    pool.get(info("b"))
    clock.now += 31  # a and p idle 61 s, b 31 s
    assert pool.sweep() == ["a"]
    assert names(pool) == ["b", "p"]
    clock.now += 30
    assert pool.sweep() == ["b"]
    assert pool.sweep() == []
    assert names(pool) == ["p"]
    assert (pool.loads, pool.unloads) == (3, 2)


def test_busy_model_not_swept_or_evicted() -> None:
    pool, registry, clock = make_pool({"a": 100, "b": 100}, idle_seconds=60, memory_budget_bytes=150)
    with pool.use(info("a")) as model:
        clock.now += 1000  # a job longer than idle_seconds
        assert pool.sweep() == []
        assert not pool.unload("a")
        pool.get(info("b"))  # over budget, but a is in use: b loads anyway
        assert names(pool) == ["a", "b"]
        assert model_bytes(model) == 100
        clock.now += 30
    # Idle time counts from the end of the job: b is idle 89 s, a only 59 s.
    clock.now += 59
    assert pool.sweep() == ["b"]
    clock.now += 2
    assert pool.sweep() == ["a"]
    assert not pool.unload("b")
    assert names(pool) == [] and registry.calls == ["a", "b"]
    assert (pool.loads, pool.unloads) == (2, 2)


def test_loading_does_not_block_snapshots_or_sweep() -> None:
    pool, registry, _ = make_pool({"a": 1, "b": 1}, idle_seconds=60)
    pool.get(info("a"))
    registry.gate = threading.Event()
    loader = threading.Thread(target=pool.get, args=(info("b"),))
    loader.start()
    try:
        started = time.monotonic()
        assert names(pool) == ["a"]
        assert pool.sweep() == []
        assert time.monotonic() - started < 1
    finally:
        registry.gate.set()
        loader.join(5)
    assert names(pool) == ["a", "b"]


def test_failed_load_leaves_pool_usable() -> None:
    pool, registry, _ = make_pool({"a": 1})
    with pytest.raises(KeyError):
        pool.get(info("missing"))
    assert pool.loaded() == [] and pool.loads == 0
    pool.get(info("a"))
    assert names(pool) == ["a"]


# --- the real packaged models --------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096  # resident pages


def _packaged() -> set[str]:
    return {i.name for i in ModelRegistry(default_model_cache(), engine="openai").available() if i.source == "packaged"}


def _transcribe(pool: ModelPool, model: ModelInfo, audio: np.ndarray | None, seen: list[weakref.ref]) -> str:
    # A function of its own, so no reference to the model outlives the call
    # and unloading can really free it.
    with pool.use(model) as whisper_model:
        seen.append(weakref.ref(whisper_model))
        return "" if audio is None else str(whisper_model.transcribe(audio, fp16=False)["text"])


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from /proc (Linux only)")
@pytest.mark.slow  # the real models
def test_real_models_alternate_under_budget() -> None:
    missing = {"tiny.en", "base"} - _packaged()
    if missing:
        pytest.skip(f"packaged offline model(s) {sorted(missing)} not installed")
    registry = ModelRegistry(default_model_cache(), engine="openai")
    tiny, base = registry.resolve("tiny.en"), registry.resolve("base")
    # Room for the larger model alone, so each switch evicts the other one.
    budget = int(max(estimate_bytes(tiny), estimate_bytes(base)) * 1.05)
    pool = ModelPool(registry, "cpu", pinned=None, memory_budget_bytes=budget)
    audio = decode_audio(FIXTURES / "short.wav")

    rss: list[int] = []
    seen: list[weakref.ref] = []
    for cycle in range(3):
        for model in (tiny, base):
            # The middle cycle only switches models, to keep the test short.
            text = _transcribe(pool, model, None if cycle == 1 else audio, seen)
            if cycle != 1:
                assert {"hello", "world"} <= words(text), (model.name, text)
            assert names(pool) == [model.name]
            # Every model but the one loaded is gone, not just unlisted.
            assert sum(ref() is not None for ref in seen) == 1
        rss.append(_rss_bytes())
    sizes = dict(pool._sizes)
    print(f"sizes {sizes}; RSS after each cycle, MB: {[round(r / 2**20) for r in rss]}")
    assert (pool.loads, pool.unloads) == (6, 5)
    for model in (tiny, base):  # the shape-based estimate is what loading measures
        assert abs(estimate_bytes(model) - sizes[model.name]) < 0.01 * sizes[model.name]
    # Loose: the first cycle warms caches and the allocator; after it, switching
    # models must not keep adding memory.
    assert rss[-1] - rss[0] < 150 * 2**20, f"RSS grew {(rss[-1] - rss[0]) / 2**20:.0f} MB over 2 cycles"
