"""The bench's sections, one module each: ``run(ctx, sec)`` measures and fills
``sec`` (figures, notes, details). Each starts its own servers on free
loopback ports with fresh storage in ``ctx.workdir``, so any one runs alone."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Ctx
from bench.report import Section
from bench.sections import (
    chaos,
    contention,
    default,
    diarize,
    engine,
    heap,
    languages,
    memory,
    pickup,
    queue,
    realtime,
    replicas,
    responsive,
    settings,
    silence,
    streams,
    vad,
    warm,
)

# name (for --only) -> (heading, the section's run), in the order a full run takes them.
SECTIONS: dict[str, tuple[str, Callable[[Ctx, Section], None]]] = {
    "warm": ("1. warm service vs in-process vs cold process", warm.run),
    "engine": ("2. engine speed and accuracy: openai-whisper, faster-whisper int8, ours", engine.run),
    "queue": ("3. queue throughput", queue.run),
    "pickup": ("4. pick-up latency, idle worker", pickup.run),
    "responsive": ("5. responsiveness during a long transcription", responsive.run),
    "memory": ("6. server memory", memory.run),
    "replicas": ("7. three replicas on PostgreSQL vs one server on SQLite", replicas.run),
    "default": ("8. the default service vs faster-whisper, whisper.cpp, openai-whisper", default.run),
    "contention": ("9. a busy machine: one CPU-bound competitor per core", contention.run),
    "silence": ("10. silence and noise: (near) empty transcripts", silence.run),
    "vad": ("11. vad_filter per job: speech time and WER, silence and noise", vad.run),
    "diarize": ("12. speaker diarization: time beside transcription, peak memory on vs off", diarize.run),
    "languages": ("13. language routing: its cost on English, languages identified", languages.run),
    "streams": ("14. event streams on a long job; partial transcript bytes written", streams.run),
    "settings": ("15. the ctranslate2 CPU defaults against each setting changed alone", settings.run),
    "chaos": ("16. chaos: replicas killed every 10 s, PostgreSQL (and the bucket) restarted", chaos.run),
    "realtime": ("17. live transcription (/v1/realtime): latency, concurrency, lag, WER", realtime.run),
    "heap": ("18. the server's heap settings against those before (glibc arenas, mmap threshold)", heap.run),
}
# The default service's figures in one command: bench/run.py --only done
GROUPS = {"done": ["default", "contention", "responsive", "silence"]}
