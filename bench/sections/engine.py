"""Section engine: real-time factor on long.mp3 and word error rate on the
committed clips: openai-whisper, faster-whisper int8 and whisper-mcp's own
engine (ctranslate2, and with VAD batching), each in its own process."""

from __future__ import annotations

import contextlib

from bench.context import FIXTURES, Ctx
from bench.peers import Helper, faster_name
from bench.report import Section
from bench.rss import mib
from bench.stats import median
from bench.wer import WER_CLIPS, wer


def run(ctx: Ctx, sec: Section) -> None:
    long_mp3 = FIXTURES / "long.mp3"
    reps = ctx.pick(3, 1)
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise RuntimeError("faster-whisper is not installed: .venv/bin/pip install -r bench/requirements.txt") from None
    # openai: plain openai-whisper transcribe(); faster: plain faster-whisper int8, the
    # fastest CPU peer; ours-*: whisper-mcp's engine as the service runs it.
    names = ["openai", "faster", "ours-ct2", "ours-vad"]
    with contextlib.ExitStack() as stack:
        helpers = {name: stack.enter_context(Helper(ctx, name)) for name in names}
        for h in helpers.values():  # warm-up on a short clip
            h.call(op="transcribe", path=str(FIXTURES / "short.wav"))
        times: dict[str, list[float]] = {name: [] for name in helpers}
        texts: dict[str, dict[str, str]] = {name: {} for name in helpers}
        audio_s = 0.0
        for i in range(reps):
            for k in range(len(names)):  # rotate the order each repetition
                name = names[(i + k) % len(names)]
                out = helpers[name].call(op="transcribe", path=str(long_mp3))
                times[name].append(out["seconds"])
                texts[name]["long.mp3"] = out["text"]
                audio_s = out["audio_s"]
        for name, h in helpers.items():  # accuracy only: the other committed clips
            for clip, _ in WER_CLIPS[1:]:
                texts[name][clip] = h.call(op="transcribe", path=str(FIXTURES / clip))["text"]
        loads = {name: h.ready["load_s"] for name, h in helpers.items()}
        rss = {name: mib(h.call(op="rss")["hwm_kb"]) for name, h in helpers.items()}
        threads = helpers["openai"].ready.get("torch_threads")
    rtf = {name: median(t) / audio_s for name, t in times.items()}
    fw = faster_name(ctx.device)
    refs = {clip: (FIXTURES / ref).read_text() for clip, ref in WER_CLIPS}
    wers = {name: wer([(refs[clip], texts[name][clip]) for clip in refs]) * 100 for name in names}
    long_wers = {name: wer([(refs["long.mp3"], texts[name]["long.mp3"])]) * 100 for name in names}
    fastest = min(("ours-ct2", "ours-vad"), key=lambda n: rtf[n])
    label = {
        "ours-ct2": "--engine ctranslate2",
        "ours-vad": "--engine ctranslate2 --vad-batching",
    }  # default compute type
    sec.add(
        f"openai-whisper RTF on long.mp3 (62 s), {threads} threads", rtf["openai"], "x RT", "", None, None, "", "", None
    )
    sec.add(
        f"{fw} RTF on long.mp3", rtf["faster"], "x RT", "openai-whisper RTF", rtf["openai"],
        rtf["openai"] / rtf["faster"], "speed-up", "", None,
    )  # fmt: skip
    sec.add(
        f"whisper-mcp fastest ({label[fastest]}) RTF", rtf[fastest], "x RT", f"{fw} RTF", rtf["faster"],
        rtf["faster"] / rtf[fastest], "speed-up", ">= 1.0x", rtf[fastest] <= rtf["faster"],
    )  # fmt: skip
    other = "ours-vad" if fastest == "ours-ct2" else "ours-ct2"
    sec.add(
        f"  whisper-mcp {label[other]} RTF", rtf[other], "x RT", f"{fw} RTF", rtf["faster"],
        rtf["faster"] / rtf[other], "speed-up", "", None,
    )  # fmt: skip
    sec.add("openai-whisper WER, committed English clips", wers["openai"], "%", "", None, None, "", "", None)
    sec.add(
        f"{fw} WER", wers["faster"], "%", "openai-whisper WER", wers["openai"],
        (wers["faster"] / wers["openai"]) if wers["openai"] else None, "fw/ow", "", None,
    )  # fmt: skip
    sec.add(
        f"whisper-mcp fastest ({label[fastest]}) WER", wers[fastest], "%", "openai-whisper WER", wers["openai"],
        (wers[fastest] / wers["openai"]) if wers["openai"] else None, "ours/ow", "<= openai-whisper",
        wers[fastest] <= wers["openai"],
    )  # fmt: skip
    sec.add(
        f"  whisper-mcp {label[other]} WER", wers[other], "%", "openai-whisper WER", wers["openai"],
        (wers[other] / wers["openai"]) if wers["openai"] else None, "ours/ow", "", None,
    )  # fmt: skip
    sec.details.update(
        reps=reps, audio_s=audio_s, seconds=times, rtf=rtf, wer_percent=wers, long_mp3_wer_percent=long_wers,
        load_s=loads, peak_rss_mib=rss, texts=texts, wer_clips=[c for c, _ in WER_CLIPS],
        settings="greedy (openai: beam_size unset; faster: beam_size=1, best_of=1), fallback temperatures 0..1, "
        "condition_on_previous_text, no VAD (ours-vad: VAD chunks, batch of 8, no timestamp tokens, first temperature only); "
        "CTranslate2 int8, cpu_threads = nproc; audio decoded once with whisper_mcp.engines.audio.decode_audio (untimed); "
        "WER with openai-whisper's EnglishTextNormalizer, all edits over all reference words; "
        "medians of reps, engines interleaved",
    )  # fmt: skip
    sec.notes.append(
        "per-run seconds: "
        + ", ".join(f"{n} {'/'.join(f'{x:.2f}' for x in t)}" for n, t in times.items())
        + "; WER on long.mp3 alone: "
        + ", ".join(f"{n} {w:.1f}%" for n, w in long_wers.items())
        + "; peak RSS: "
        + ", ".join(f"{n} {r:.0f} MiB" for n, r in rss.items())
    )
