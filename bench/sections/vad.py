"""Section vad: the per-job vad_filter option on and off: speech time and
WER, silence and noise."""

from __future__ import annotations

import httpx

from bench.clips import noise_clips
from bench.context import FIXTURES, Ctx
from bench.report import Section
from bench.service import service_e2e, serving
from bench.stats import median
from bench.wer import WER_CLIPS, normalise_words, wer


def run(ctx: Ctx, sec: Section) -> None:
    """vad_filter=true against false, per job on one default server: the speech
    clips (time, WER) and the silence and noise clips (time, words)."""
    rounds = ctx.pick(3, 1)
    speech = [(FIXTURES / c, (FIXTURES / r).read_text()) for c, r in WER_CLIPS]
    noise = noise_clips(ctx)
    times: dict[str, dict[bool, list[float]]] = {"speech": {False: [], True: []}, "noise": {False: [], True: []}}
    texts: dict[bool, dict[str, str]] = {False: {}, True: {}}
    with serving(ctx) as srv, httpx.Client(base_url=srv.url, timeout=900) as client:
        service_e2e(client, FIXTURES / "speech.wav", vad_filter="true")  # warm-up, VAD model loaded
        for r in range(rounds):
            for vad in (False, True) if r % 2 == 0 else (True, False):  # alternate the order
                flag = str(vad).lower()
                for kind, paths in (("speech", [p for p, _ in speech]), ("noise", list(noise.values()))):
                    total = 0.0
                    for path in paths:
                        out = service_e2e(client, path, vad_filter=flag)
                        total += out["total_s"]
                        texts[vad][path.name] = out["text"].strip()
                    times[kind][vad].append(total)
    wers = {vad: wer([(ref, texts[vad][p.name]) for p, ref in speech]) * 100 for vad in (False, True)}
    t_off, t_on = median(times["speech"][False]), median(times["speech"][True])
    sec.add(
        "speech clips (long.mp3, speech.wav, short.wav), vad_filter=true", t_on, "s", "vad_filter=false", t_off,
        t_off / t_on, "off/on", "", None,
    )  # fmt: skip
    sec.add("  WER, vad_filter=true", wers[True], "%", "vad_filter=false", wers[False], None, "", "", None)
    n_off, n_on = median(times["noise"][False]), median(times["noise"][True])
    sec.add(
        "silence and noise clips, vad_filter=true", n_on, "s", "vad_filter=false", n_off, n_off / n_on, "off/on",
        "", None,
    )  # fmt: skip
    for name, path in noise.items():
        w_on, w_off = (len(normalise_words(texts[v][path.name])) for v in (True, False))
        sec.add(
            f"  words in {name}, vad_filter=true", w_on, "words", "vad_filter=false", w_off, None, "", "0", w_on == 0
        )
    sec.details.update(times_s=times, wer_percent=wers, texts=texts, rounds=rounds)
    sec.notes.append(
        "default: vad_filter is on by default only if it is faster AND no worse in WER on the speech clips; "
        f"here speech {t_off:.2f} s off vs {t_on:.2f} s on, WER {wers[False]:.1f}% vs {wers[True]:.1f}%"
    )
