"""Section settings: the ctranslate2 engine's CPU defaults (decoder threads,
encoder precision, beam size, windows fitted to their audio) against each
setting changed alone, timed in
one process, interleaved (bench/settings_probe.py), with the word error rate
of each: the table the defaults are chosen from."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

from bench.clips import REAL_SPEECH_TEXT, real_speech, short_clips
from bench.context import BENCH, FIXTURES, PY, Ctx
from bench.report import Section
from bench.stats import median
from bench.wer import WER_CLIPS, wer


def run(ctx: Ctx, sec: Section) -> None:
    # (paths, reference) groups: the committed clips, and in a full run the
    # real speech recording too, where a cheaper encoder's errors show (on
    # the clips alone the int8 encoder scores the same); then the same speech
    # cut at pauses into clips of 5-10 s, as short jobs come (their joined
    # transcripts scored against the whole reference), where windows shorter
    # than 30 s are most of the work.
    recordings = [(FIXTURES / c, (FIXTURES / ref).read_text()) for c, ref in ctx.pick(WER_CLIPS, WER_CLIPS[:1])]
    recordings += ctx.pick([(real_speech(ctx.workdir), REAL_SPEECH_TEXT.read_text())], [])
    cut = [short_clips(ctx.workdir, path, text) for path, text in recordings if path.suffix != ".wav"]
    groups: list[tuple[list[Path], str]] = [([path], text) for path, text in recordings] + cut
    rounds = ctx.pick(5, 1)
    paths = [path for group, _ in groups for path in group]
    done = subprocess.run(
        [PY, str(BENCH / "settings_probe.py"), ctx.model, str(rounds), *(str(path) for path in paths)],
        cwd=ctx.tree, env=ctx.sub_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench/settings_probe.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    head, runs = lines[0], lines[1:]
    per_round: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))  # setting -> round -> seconds
    short_round: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))  # the same, cut clips only
    texts: dict[str, dict[str, str]] = defaultdict(dict)  # setting -> clip -> last text
    cut_names = {path.name for group, _ in cut for path in group}
    audio_s = sum({r["clip"]: r["audio_s"] for r in runs if r["clip"] not in cut_names}.values())
    for r in runs:
        (short_round if r["clip"] in cut_names else per_round)[r["setting"]][r["round"]] += r["seconds"]
        texts[r["setting"]][r["clip"]] = r["text"]

    def scored(name: str, among: list[tuple[list[Path], str]]) -> float:
        return wer([(ref, " ".join(texts[name][p.name] for p in group)) for group, ref in among]) * 100

    seconds = {name: median(list(by_round.values())) for name, by_round in per_round.items()}
    # The table's rows: the recordings, as the defaults are held to; the short clips in a note.
    wers = {name: scored(name, groups[: len(recordings)]) for name in head["settings"]}
    base = seconds["defaults"]
    label = (
        f"defaults (decoder threads {head['decoder_threads']}, encoder {head['encoder']}, beam {head['beam']}, "
        "windows fitted)"
    )
    for name in head["settings"]:
        shown = label if name == "defaults" else f"  {name}"
        sec.add(
            f"{shown}: time", seconds[name], "s", "defaults", base, seconds[name] / base, "time/defaults", "", None
        )  # fmt: skip
        sec.add(f"{shown}: WER", wers[name], "%", "defaults", wers["defaults"], None, "", "", None)
    threads = {name: s for name, s in seconds.items() if name.startswith("decoder threads") or name == "defaults"}
    fastest = min(threads, key=lambda n: threads[n])
    pieces = [len(group) for group, _ in cut]
    short = {name: (median(list(short_round[name].values())), scored(name, cut)) for name in head["settings"]}
    sec.notes.append(
        f"{head['cores']} cores (encoder threads); {len(recordings)} recording(s), {audio_s:.0f} s of audio a round, "
        f"median of {rounds} round(s), settings interleaved; fastest decoder thread count: "
        + (str(head["decoder_threads"]) + " (the default)" if fastest == "defaults" else fastest.split()[-1])
        + (f"; --decoder-threads auto chose {head['decoder_threads']} {head['auto']}" if "auto" in head else "")
    )
    sec.notes.append(
        f"short clips, the same speech ({' + '.join(map(str, pieces))} pieces of "
        f"{', '.join(path.name for path, _ in recordings if path.suffix != '.wav')} cut at pauses, 5-10 s): "
        + "; ".join(f"{name} {t:.2f} s, WER {w:.1f} %" for name, (t, w) in short.items())
    )
    sec.details.update(
        head=head, seconds=seconds, wer=wers, short_clips=short,
        runs=[{k: v for k, v in r.items() if k != "text"} for r in runs],
    )  # fmt: skip
