"""Section silence: silence and noise through the default service, and how
many words come back."""

from __future__ import annotations

import httpx

from bench.clips import noise_clips
from bench.context import Ctx
from bench.report import Section
from bench.service import service_e2e, serving
from bench.wer import normalise_words


def run(ctx: Ctx, sec: Section) -> None:
    paths = noise_clips(ctx)
    texts: dict[str, str] = {}
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=600) as client:
        for name, path in paths.items():
            texts[name] = service_e2e(client, path)["text"].strip()
            words = len(normalise_words(texts[name]))
            sec.add(f"whisper-mcp default: words in {name}", words, "words", "", None, None, "", "<= 3", words <= 3)
    sec.details.update(texts=texts)
    sec.notes.append("transcripts: " + "; ".join(f"{k}: {v[:80]!r}" for k, v in texts.items()))
