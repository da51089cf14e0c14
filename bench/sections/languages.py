"""Section languages: what language routing costs on English (the default,
naming no model, against naming tiny.en, interleaved) and how often it
identifies the language of the multilingual fixtures, with their WER.
The baseline names tiny.en and English, so nothing is identified at all."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.service import completed, service_e2e, serving, submit, wait_done
from bench.wer import wer

LANGUAGES = FIXTURES / "languages"
ENGLISH = [FIXTURES / "long.mp3", FIXTURES / "speech.wav"]
BASELINE = {"model": "tiny.en", "language": "en"}  # no identification: what English cost before routing


def recordings() -> list[tuple[Path, str, str]]:
    """(audio, language code, what is said) for each multilingual fixture: ``<code>.<ext>`` beside ``<code>.txt``."""
    found = []
    for text in sorted(LANGUAGES.glob("*.txt")):
        audio = next((p for p in sorted(LANGUAGES.glob(f"{text.stem}.*")) if p.suffix != ".txt"), None)
        if audio is not None:
            found.append((audio, text.stem, text.read_text().strip()))
    return found


def run(ctx: Ctx, sec: Section) -> None:
    rounds = ctx.pick(5, 2)
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=900) as client:
        # Load both models first, so no round pays a model load.
        for fields in ({}, BASELINE):
            service_e2e(client, FIXTURES / "spanish.wav", cache="false", **fields)
        times: dict[str, list[float]] = {"routed": [], "named": []}
        for _ in range(rounds):
            for label, fields in (("routed", {}), ("named", BASELINE)):
                total = sum(service_e2e(client, clip, cache="false", **fields)["total_s"] for clip in ENGLISH)
                times[label].append(total)
        routed, named = min(times["routed"]), min(times["named"])
        ratio = routed / named
        sec.add(
            "English (long.mp3 + speech.wav), no model named (routed)",
            routed,
            "s",
            "model=tiny.en language=en",
            named,
            ratio,
            "routed/named",
            "<= 1.10",
            ratio <= 1.10,
        )
        heard: list[tuple[str, str, str, str]] = []  # (file, expected, identified, model)
        pairs: list[tuple[str, str]] = []
        for audio, code, said in recordings():
            record = completed(wait_done(client, submit(client, audio, cache="false")["job_id"], poll=None))
            heard.append((audio.name, code, str(record.get("language")), str(record.get("model"))))
            pairs.append((said, str(record.get("transcript") or "")))
    if heard:
        right = sum(expected == got for _, expected, got, _ in heard)
        sec.add(
            "language identified (multilingual fixtures)", 100.0 * right / len(heard), "%", "", None, None, "", "", None
        )
        sec.add("WER of routed non-English fixtures", 100.0 * wer(pairs), "%", "", None, None, "", "", None)
    sec.details.update(times=times, heard=heard)
    sec.notes.append("each round sends both English clips once each way; minimum of %d rounds" % rounds)
    sec.notes.append("heard: " + "; ".join(f"{f}: {e}->{g} ({m})" for f, e, g, m in heard))
