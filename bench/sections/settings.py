"""Section settings: the ctranslate2 engine's CPU defaults (decoder threads,
encoder precision, beam size) against each setting changed alone, timed in
one process, interleaved (bench/settings_probe.py), with the word error rate
of each: the table the defaults are chosen from."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

from bench.clips import REAL_SPEECH_TEXT, real_speech
from bench.context import BENCH, FIXTURES, PY, Ctx
from bench.report import Section
from bench.stats import median
from bench.wer import WER_CLIPS, wer


def run(ctx: Ctx, sec: Section) -> None:
    # (path, reference): the committed clips, and in a full run the real
    # speech recording too, where a cheaper encoder's errors show (on the
    # clips alone the int8 encoder scores the same).
    clips = [(FIXTURES / c, (FIXTURES / ref).read_text()) for c, ref in ctx.pick(WER_CLIPS, WER_CLIPS[:1])]
    clips += ctx.pick([(real_speech(ctx.workdir), REAL_SPEECH_TEXT.read_text())], [])
    rounds = ctx.pick(5, 1)
    done = subprocess.run(
        [PY, str(BENCH / "settings_probe.py"), ctx.model, str(rounds), *(str(path) for path, _ in clips)],
        cwd=ctx.tree, env=ctx.sub_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench/settings_probe.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    head, runs = lines[0], lines[1:]
    per_round: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))  # setting -> round -> seconds
    texts: dict[str, dict[str, str]] = defaultdict(dict)  # setting -> clip -> last text
    audio_s = sum({r["clip"]: r["audio_s"] for r in runs}.values())
    for r in runs:
        per_round[r["setting"]][r["round"]] += r["seconds"]
        texts[r["setting"]][r["clip"]] = r["text"]
    refs = {path.name: text for path, text in clips}
    seconds = {name: median(list(by_round.values())) for name, by_round in per_round.items()}
    wers = {name: wer([(refs[c], texts[name][c]) for c in refs]) * 100 for name in head["settings"]}
    base = seconds["defaults"]
    label = f"defaults (decoder threads {head['decoder_threads']}, encoder {head['encoder']}, beam {head['beam']})"
    for name in head["settings"]:
        shown = label if name == "defaults" else f"  {name}"
        sec.add(
            f"{shown}: time", seconds[name], "s", "defaults", base, seconds[name] / base, "time/defaults", "", None
        )  # fmt: skip
        sec.add(f"{shown}: WER", wers[name], "%", "defaults", wers["defaults"], None, "", "", None)
    threads = {name: s for name, s in seconds.items() if name.startswith("decoder threads") or name == "defaults"}
    fastest = min(threads, key=lambda n: threads[n])
    sec.notes.append(
        f"{head['cores']} cores (encoder threads); {len(clips)} clip(s), {audio_s:.0f} s of audio a round, "
        f"median of {rounds} round(s), settings interleaved; fastest decoder thread count: "
        + (str(head["decoder_threads"]) + " (the default)" if fastest == "defaults" else fastest.split()[-1])
        + (f"; --decoder-threads auto chose {head['decoder_threads']} {head['auto']}" if "auto" in head else "")
    )
    sec.details.update(
        head=head, seconds=seconds, wer=wers, runs=[{k: v for k, v in r.items() if k != "text"} for r in runs]
    )
