"""The ctranslate2 engine's CPU settings timed in one process: the decoder's
thread count, the encoder's precision, the beam size and fitted windows, one
at a time away from the defaults, interleaved (each round runs every setting
once, in a rotated order), so a busy machine slows them alike.

``python bench/settings_probe.py MODEL ROUNDS CLIP [CLIP...]``: one JSON
object a line: ``{"setting", "round", "clip", "seconds", "text"}``, after a
first line describing the settings. Run by bench/ section settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(model_name: str, rounds: str, *clips: str) -> None:
    from whisper_mcp.config import Settings, default_model_cache
    from whisper_mcp.engines.audio import decode_audio
    from whisper_mcp.engines.decoder_threads import RULE_CORES, candidates
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.options import TranscribeOptions
    from whisper_mcp.transcriber import Transcriber, default_threads

    defaults = Settings()
    cores = default_threads()

    def engine(**changed: object) -> Transcriber:
        kwargs: dict = dict(
            encoder_compute_type=defaults.encoder_compute_type,
            decoder_threads=defaults.decoder_threads,
            default_beam_size=defaults.default_beam_size,
            fit_windows=defaults.fit_windows,
        )
        kwargs.update(changed)
        return Transcriber(ModelRegistry(default_model_cache(), engine="ctranslate2"), "cpu", cores, **kwargs)

    base = engine()
    info = base.registry.resolve(model_name)
    base.load(info)  # --decoder-threads auto settles here (timed once on many cores)
    # setting label -> (engine, beam_size of the job; 0: the engine's default)
    settings: dict[str, tuple[Transcriber, int]] = {"defaults": (base, 0)}
    for n in candidates(cores):
        if n != base.backend.decoder_threads:
            settings[f"decoder threads {n}"] = (engine(decoder_threads=n), 0)
    settings["encoder int8 (same as the decoder)"] = (engine(encoder_compute_type="same"), 0)
    settings["windows padded to 30 s"] = (engine(fit_windows=False), 0)
    for beam in (1, 2, 5):
        if beam != base.default_beam_size:
            settings[f"beam {beam}"] = (base, beam)
    for eng, _ in settings.values():
        eng.load(info)
    print(json.dumps({
        "cores": cores, "decoder_threads": base.backend.decoder_threads, "encoder": base.encoder_compute_type,
        "beam": base.default_beam_size, "settings": list(settings),
        "auto": f"by the rule (up to {RULE_CORES} cores)" if cores <= RULE_CORES else "timed at load, cached",
    }), flush=True)  # fmt: skip
    audio = {clip: decode_audio(Path(clip)) for clip in clips}
    names = list(settings)
    for eng, beam in settings.values():  # warm-up
        eng.transcribe(audio[clips[-1]][: 16000 * 5], info, TranscribeOptions(beam_size=beam or None))
    for r in range(int(rounds)):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            eng, beam = settings[name]
            for clip, samples in audio.items():
                t = time.perf_counter()
                text = eng.transcribe(samples, info, TranscribeOptions(beam_size=beam or None)).text
                out = {"setting": name, "round": r, "clip": Path(clip).name, "seconds": time.perf_counter() - t}
                print(json.dumps({**out, "text": text, "audio_s": len(samples) / 16000}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as serve sets it
    main(*sys.argv[1:])
