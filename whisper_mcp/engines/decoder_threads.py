"""How many threads the ctranslate2 decoder runs on when ``--decoder-threads``
is ``auto``: one on a machine with few cores, as bench/ section settings
measured (2 cores, tiny.en and base: one thread decodes faster than two);
on more cores, timed once per model, machine and settings at its first load,
and the answer cached beside the models, so later starts only read it.

Decoding runs token by token on small matrices, where threads' fork and join
can cost more than they share out; how many pay off depends on the cores and
the model, which is why a bigger machine measures instead of guessing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from whisper_mcp.config import AUTO_DECODER_THREADS as AUTO

log = logging.getLogger(__name__)

__all__ = ["AUTO", "RULE_CORES", "candidates", "choose", "fastest", "machine_key", "timer"]
# Up to this many cores the rule answers without timing: bench/ section
# settings, 2 cores: one decoder thread was the fastest for every model timed.
RULE_CORES = 4
# A count with more threads must beat the fewer-thread one by this much to be
# chosen: within it, timings are noise and fewer threads leave cores to others.
MARGIN = 0.05


def candidates(cores: int) -> list[int]:
    """The counts worth timing on ``cores`` cores: 1, 2, 4, ... and all of them."""
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return sorted({*counts, max(cores, 1)})


def fastest(seconds: dict[int, float]) -> int:
    """The count to use from timings (count -> seconds): the fastest, except
    that more threads must win by ``MARGIN`` over the best count with fewer."""
    best = min(seconds)
    for count in sorted(seconds):
        if seconds[count] < seconds[best] * (1 - MARGIN):
            best = count
    return best


def choose(
    cores: int, key: str, cache: Path, measure: Callable[[Iterable[int]], dict[int, float]] | None
) -> tuple[int, str]:
    """The decoder thread count for ``key`` (model, settings, machine) on
    ``cores`` cores, and why, in words: the rule on few cores, else a cached
    measurement, else ``measure`` (count -> seconds for each candidate), whose
    result is cached in the JSON file ``cache``. A cache that cannot be read
    or written costs a measurement, never a start."""
    if cores <= RULE_CORES:
        return 1, f"{cores} cores: one decoder thread (the rule up to {RULE_CORES} cores, bench/ section settings)"
    known = _read(cache)
    entry = known.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("threads"), int) and entry["threads"] > 0:
        return entry["threads"], f"measured before on this machine ({_timings(entry.get('seconds', {}))}; {cache})"
    if measure is None:
        raise ValueError(f"{cores} cores: the decoder thread count must be timed, and no model was given to time")
    seconds = measure(candidates(cores))
    count = fastest(seconds)
    known[key] = {"threads": count, "seconds": {str(n): round(s, 4) for n, s in seconds.items()}}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        scratch = cache.with_name(cache.name + ".tmp")
        scratch.write_text(json.dumps(known, indent=1, sort_keys=True))
        scratch.replace(cache)
    except OSError as exc:
        log.warning("decoder threads: could not cache the measurement in %s (%s)", cache, exc)
    return count, f"measured now on {cores} cores ({_timings(known[key]['seconds'])})"


def _read(cache: Path) -> dict:
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _timings(seconds: dict) -> str:
    return ", ".join(
        f"{n} threads {float(s) * 1000:.0f} ms" for n, s in sorted(seconds.items(), key=lambda i: int(i[0]))
    )


def machine_key(folder: Path, compute_type: str, beam: int, cores: int) -> str:
    """What a measurement holds for: the model's folder, its precision and
    beam, the cores, the CPU and the ctranslate2 version."""
    import ctranslate2

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{folder.name}|{compute_type}|beam {beam}|{cores} cores|{cpu}|ctranslate2 {ctranslate2.__version__}"


def timer(folder: Path, compute_type: str, beam: int, tokens: int = 48) -> Callable[[Iterable[int]], dict[int, float]]:
    """A ``measure`` for ``choose``: for each count, the model in ``folder``
    loaded on that many threads decodes ``tokens`` tokens at ``beam`` from one
    encoded 30 s window (the end of text suppressed, so every count does the
    same work); the best of three, in seconds."""

    def measure(counts: Iterable[int]) -> dict[int, float]:
        import time

        import ctranslate2
        import numpy as np
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(folder / "tokenizer.json"))

        def token(text: str) -> int:
            found = vocab.token_to_id(text)
            if found is None:
                raise ValueError(f"{folder.name}'s tokenizer has no {text}")
            return found

        seconds: dict[int, float] = {}
        encoded = None
        for count in counts:
            model = ctranslate2.models.Whisper(
                str(folder), device="cpu", compute_type=compute_type, intra_threads=count
            )
            prompt = [token("<|startoftranscript|>")]
            if model.is_multilingual:
                prompt += [token("<|en|>"), token("<|transcribe|>")]
            prompt.append(token("<|notimestamps|>"))
            if encoded is None:
                noise = np.random.default_rng(0).standard_normal((1, model.n_mels, 3000)).astype(np.float32) * 0.1
                encoded = model.encode(ctranslate2.StorageView.from_array(noise), to_cpu=True)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                model.generate(
                    encoded, [prompt], beam_size=beam, max_length=tokens, suppress_blank=False,
                    suppress_tokens=[-1, token("<|endoftext|>")],
                )  # fmt: skip
                best = min(best, time.perf_counter() - start)
            seconds[count] = best
            del model
        return seconds

    return measure
