"""Loaded Whisper models: loaded on first use, unloaded when idle or when a
memory budget needs the room.

The pool holds whatever object its loader returns (an openai-whisper module, a
faster-whisper model, ...): ``load(info)`` makes one, ``size(model)`` measures it
and ``estimate(info)`` guesses that before loading. By default it loads
openai-whisper models through the registry.

The inference thread holds a model with ``with pool.use(info) as model:`` for
the length of a job; ``sweep()`` (from any thread) and budget eviction skip
models in use, and never touch the pinned start-up model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_mcp.heap import give_back_free_heap
from whisper_mcp.models.registry import ModelInfo, ModelRegistry

if TYPE_CHECKING:  # torch only where the openai engine brought it in
    import torch

log = logging.getLogger(__name__)

_MB = 1024 * 1024

# openai-whisper's shapes per model name (whisper/__init__.py lists only URLs),
# so a model's size can be estimated before it is loaded:
# (n_mels, state, heads, audio layers, text layers, n_vocab).
_SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny.en": (80, 384, 6, 4, 4, 51864),
    "tiny": (80, 384, 6, 4, 4, 51865),
    "base.en": (80, 512, 8, 6, 6, 51864),
    "base": (80, 512, 8, 6, 6, 51865),
    "small.en": (80, 768, 12, 12, 12, 51864),
    "small": (80, 768, 12, 12, 12, 51865),
    "medium.en": (80, 1024, 16, 24, 24, 51864),
    "medium": (80, 1024, 16, 24, 24, 51865),
    "large-v1": (80, 1280, 20, 32, 32, 51865),
    "large-v2": (80, 1280, 20, 32, 32, 51865),
    "large": (128, 1280, 20, 32, 32, 51866),
    "large-v3": (128, 1280, 20, 32, 32, 51866),
    "large-v3-turbo": (128, 1280, 20, 32, 4, 51866),
    "turbo": (128, 1280, 20, 32, 4, 51866),
}


@dataclass(frozen=True)
class LoadedModel:
    """A snapshot for /health and /models."""

    name: str
    bytes: int  # parameter + buffer bytes
    loaded_at: float
    last_used: float
    pinned: bool  # the start-up model: never unloaded


@dataclass
class _Entry:
    model: Any
    bytes: int
    loaded_at: float
    last_used: float
    busy: int = 0  # holders inside use(); >0 means neither swept nor evicted


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (tied tensors once)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_sparse:  # Whisper's alignment_heads; nbytes refuses sparse
            total += tensor._values().nbytes + tensor._indices().nbytes
        else:
            total += tensor.nbytes
    return total


def estimate_bytes(info: ModelInfo) -> int:
    """In-memory size before loading; 0 when unknown.

    A known name is counted from Whisper's layer shapes (arithmetic, so nothing
    heavy is imported or built); a checkpoint file counts double, as
    openai-whisper stores float16 and loads float32.
    """
    shape = _SHAPES.get(info.name)
    if shape is not None:
        n_mels, s, _heads, audio_layers, text_layers, n_vocab = shape
        audio_ctx, text_ctx = 1500, 448  # the same in every Whisper
        attention = 4 * s * s + 3 * s  # query, key (no bias), value, out
        mlp = 8 * s * s + 5 * s  # s -> 4s -> s
        encoder = (
            n_mels * s * 3 + s + s * s * 3 + s  # two convolutions
            + audio_ctx * s  # positional embedding
            + audio_layers * (attention + mlp + 4 * s)  # two layer norms per block
            + 2 * s
        )  # fmt: skip
        decoder = (
            n_vocab * s + text_ctx * s  # token and positional embeddings
            + text_layers * (2 * attention + mlp + 6 * s)  # self and cross attention
            + 2 * s
            + text_ctx * text_ctx  # causal mask buffer
        )  # fmt: skip
        return 4 * (encoder + decoder)  # float32
    if info.source == "file":
        with contextlib.suppress(OSError):
            return 2 * Path(info.name).stat().st_size
    return 0


def _release_memory(device: str) -> None:
    # Whisper modules hold no reference cycles we know of, but a traceback or a
    # hook might; collect so the tensors really go now, not at some later GC.
    gc.collect()
    torch = sys.modules.get("torch")  # only a torch model can hold torch's CUDA cache
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand cached blocks back to the driver
    # glibc keeps freed heap pages mapped; without a trim, RSS would stay at its
    # peak even though the next model reuses the space.
    give_back_free_heap()


class ModelPool:
    def __init__(
        self,
        registry: ModelRegistry | None,
        device: str,
        *,
        pinned: str | None,
        idle_seconds: float = 600.0,  # <= 0: never unload for idleness
        memory_budget_bytes: int = 0,  # <= 0: no budget
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[ModelInfo], Any] | None = None,  # default: registry.load(info, device)
        size: Callable[[Any], int] = model_bytes,  # bytes a loaded model holds
        estimate: Callable[[ModelInfo], int] = estimate_bytes,  # bytes before loading; 0 unknown
    ) -> None:
        if load is None:
            if registry is None:
                raise ValueError("ModelPool needs a registry or a load function")
            load = lambda info: registry.load(info, device)  # noqa: E731
        self.registry = registry
        self.device = device
        self._load = load
        self._size = size
        self._estimate = estimate
        self.pinned = pinned
        self.idle_seconds = idle_seconds
        self.memory_budget_bytes = memory_budget_bytes
        self._clock = clock
        self.loads = 0
        self.unloads = 0
        self._entries: dict[str, _Entry] = {}
        self._sizes: dict[str, int] = {}  # measured sizes outlive unloading, for estimates
        # _lock guards the state and is held only briefly, so loaded()/sweep()
        # never wait for a load. _load_lock serialises loads, so two callers
        # asking for the same model load it once.
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @contextlib.contextmanager
    def use(self, info: ModelInfo) -> Iterator[Any]:
        """The model, loaded if needed, kept from unloading until the block ends."""
        entry = self._acquire(info)
        try:
            yield entry.model
        finally:
            with self._lock:
                entry.busy -= 1
                # Idle time counts from the end of a job, not its start.
                entry.last_used = self._clock()

    def get(self, info: ModelInfo) -> Any:
        """The model, loaded if needed; not held busy, so prefer ``use``."""
        with self.use(info) as model:
            return model

    def sweep(self) -> list[str]:
        """Unload unpinned, unused models idle longer than ``idle_seconds``."""
        if self.idle_seconds <= 0:
            return []
        now = self._clock()
        with self._lock:
            names = [
                name
                for name, e in self._entries.items()
                if self._evictable(name, e) and now - e.last_used > self.idle_seconds
            ]
            for name in names:
                self._pop(name, "idle")
        if names:
            _release_memory(self.device)
        return names

    def unload(self, name: str) -> bool:
        """Unload ``name`` now; False if not loaded, pinned or in use."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not self._evictable(name, entry):
                return False
            self._pop(name, "requested")
        _release_memory(self.device)
        return True

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return [
                LoadedModel(name, e.bytes, e.loaded_at, e.last_used, name == self.pinned)
                for name, e in sorted(self._entries.items())
            ]

    def _acquire(self, info: ModelInfo) -> _Entry:
        with self._lock:
            entry = self._take(info.name)
            if entry is not None:
                return entry
        with self._load_lock:
            with self._lock:
                entry = self._take(info.name)  # another caller may have loaded it meanwhile
                if entry is not None:
                    return entry
                need = self._sizes.get(info.name) or self._estimate(info)
                evicted = self._make_room(need, info.name)
            if evicted:
                _release_memory(self.device)  # free before loading, not after: the point of a budget
            started = time.monotonic()
            model = self._load(info)
            took = time.monotonic() - started
            size = self._size(model)
            now = self._clock()
            with self._lock:
                entry = _Entry(model, size, loaded_at=now, last_used=now, busy=1)
                self._entries[info.name] = entry
                self._sizes[info.name] = size
                self.loads += 1
                # The estimate may have been missing or low: enforce the budget now.
                evicted = self._make_room(0, info.name)
            log.info("loaded model %s (%.1f MB) in %.2f s", info.name, size / _MB, took)
            if evicted:
                _release_memory(self.device)
            return entry

    def _take(self, name: str) -> _Entry | None:
        # Caller holds _lock: marking busy together with the lookup means a
        # sweep cannot slip in between.
        entry = self._entries.get(name)
        if entry is not None:
            entry.busy += 1
            entry.last_used = self._clock()
        return entry

    def _make_room(self, need: int, loading: str) -> list[str]:
        """Evict least-recently-used models until ``need`` more bytes fit; holds _lock."""
        budget = self.memory_budget_bytes
        evicted: list[str] = []
        if budget <= 0:
            return evicted
        while sum(e.bytes for e in self._entries.values()) + need > budget:
            candidates = [
                (e.last_used, name) for name, e in self._entries.items() if name != loading and self._evictable(name, e)
            ]
            if not candidates:
                total = sum(e.bytes for e in self._entries.values())
                log.warning(
                    "model memory budget %.1f MB exceeded (%.1f MB loaded, %.1f MB more for %s); "
                    "only pinned or in-use models are left to unload",
                    budget / _MB, total / _MB, need / _MB, loading,
                )  # fmt: skip
                break
            name = min(candidates)[1]
            self._pop(name, f"memory budget, for {loading}")
            evicted.append(name)
        return evicted

    def _evictable(self, name: str, entry: _Entry) -> bool:
        return name != self.pinned and entry.busy == 0

    def _pop(self, name: str, reason: str) -> None:
        # Holds _lock. Dropping the entry drops the pool's only reference;
        # _release_memory() then frees the tensors, outside the lock.
        entry = self._entries.pop(name)
        self.unloads += 1
        now = self._clock()
        log.info(
            "unloaded model %s (%.1f MB, %s) after %.0f s loaded, %.0f s idle",
            name, entry.bytes / _MB, reason, now - entry.loaded_at, now - entry.last_used,
        )  # fmt: skip


__all__ = ["LoadedModel", "ModelPool", "estimate_bytes", "model_bytes"]
