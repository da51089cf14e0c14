"""What the server transcribes with: the backend chosen by configuration, the
pool of models it has loaded, and the diarizer that runs after it.

* ``ctranslate2`` (default): faster-whisper on CTranslate2 (``ctranslate2``),
  about twice as fast on CPU with int8 weights, which can batch a file's
  speech chunks instead (``vad_batching``);
* ``openai``: openai-whisper on torch (``openai``), which streams the audio
  into features.

Both can run several short jobs in one forward pass (``transcribe_batch``).

Both take the same ``TranscribeOptions`` and return the same ``Transcription``
(``engines.base``). This is the only module that imports the backends; they
import neither this module nor each other, and ``engines/`` never imports
``diarization/``: the speaker step joins a backend here. Everything here
blocks; only the inference thread calls into it. A backend is imported only
when chosen, so the ctranslate2 engine runs without torch in the process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from whisper_mcp.config import engine_name
from whisper_mcp.diarization import step as diarization
from whisper_mcp.engines.audio import SAMPLE_RATE, first_seconds
from whisper_mcp.engines.base import (
    BATCH_MAX_SECONDS,
    COMPUTE_TYPES,
    AudioInput,
    Backend,
    BatchItem,
    ProgressCallback,
    Segment,
    SegmentCallback,
    Transcription,
)
from whisper_mcp.languages import LANGUAGES
from whisper_mcp.models.pool import ModelPool
from whisper_mcp.models.registry import ModelInfo, ModelRegistry, model_label
from whisper_mcp.options import TranscribeOptions, english_only


def default_threads() -> int:
    """Inference threads when none are set, as torch chooses them: OMP_NUM_THREADS
    if set, else one per physical core this process may use (a container's CPU
    set, not the host's; hyper-threads share a core's arithmetic units)."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("OMP_NUM_THREADS", "")) > 0:
            return int(os.environ["OMP_NUM_THREADS"])
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


class Transcriber:
    """A backend, the model pool and the diarizer: the models and the
    ``transcribe`` calls the worker uses (the ``engines.base.Engine`` protocol).

    ``registry``: the models on offer, built for this engine
    (``ModelRegistry(cache, engine=...)``).
    ``engine``: ``openai`` or ``ctranslate2`` (faster-whisper); by default the
    registry's, and if given it must be the registry's (``ValueError`` if not).
    ``compute_type``: ``default`` (openai: float16 on CUDA, else float32;
    ctranslate2: float16 on CUDA, else int8), or one the engine supports on the
    device (ctranslate2: int8, int8_float32, int8_float16, float32, float16,
    bfloat16; openai: float32, float16 on CUDA). An unsupported choice raises
    ``ValueError`` here, at start-up, rather than at the first job.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        threads: int = 0,
        *,
        pinned: str | None = None,
        idle_seconds: float = 600.0,
        memory_budget_bytes: int = 0,
        engine: str | None = None,
        compute_type: str = "default",
        encoder_compute_type: str = "default",
        decoder_threads: int = 1,
        default_beam_size: int = 0,
        batch_size: int = 8,
        vad_batching: bool = False,
        fit_windows: bool = True,
    ) -> None:
        engine = registry.engine if engine is None else engine_name(engine)
        if engine != registry.engine:
            # The registry decides which names resolve and how (no .pt files
            # for ctranslate2), so it must have been built for this engine.
            raise ValueError(
                f"engine {engine!r} was given a model registry built for engine {registry.engine!r}; "
                f"build it with ModelRegistry(..., engine={engine!r})."
            )
        compute_type = (compute_type or "default").strip().lower()
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"Unknown compute_type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}.")
        self.registry = registry
        self.backend: Backend
        if engine == "ctranslate2":
            from whisper_mcp.engines.ctranslate2 import CTranslate2Backend  # faster-whisper is optional

            self.backend = CTranslate2Backend(
                registry,
                device,
                compute_type,
                encoder_compute_type=encoder_compute_type,
                threads=threads if threads > 0 else default_threads(),
                decoder_threads=decoder_threads,
                default_beam_size=default_beam_size,
                vad_batching=vad_batching,
                batch_size=batch_size,
                fit_windows=fit_windows,
            )
        elif vad_batching:
            raise ValueError("vad_batching needs engine ctranslate2 (faster-whisper); the openai engine has no VAD.")
        else:
            import torch

            from whisper_mcp.engines.openai import OpenAIBackend

            if threads > 0:
                # Process-wide by nature: torch has one intra-op thread count, no
                # per-model one. The service builds one engine per process, so this
                # is where its threads setting takes effect; a later engine in the
                # same process (tests) changes it for all.
                torch.set_num_threads(threads)
            self.backend = OpenAIBackend(registry, device, compute_type, default_beam_size)
        self.engine = engine
        self.compute_type = self.backend.compute_type
        self.encoder_compute_type = self.backend.encoder_compute_type
        self.default_beam_size = self.backend.default_beam_size
        self.device = self.backend.device
        self.pool = ModelPool(
            registry,
            self.device,
            pinned=pinned,
            idle_seconds=idle_seconds,
            memory_budget_bytes=memory_budget_bytes,
            load=self._load,
            size=self._size,
            estimate=self._estimate,
        )

    # The pool also holds the diarizer (diarization.step.DIARIZER), so that it
    # shares the memory budget and idle unloading with the Whisper models.
    def _load(self, info: ModelInfo) -> object:
        return diarization.load_diarizer(self.device) if diarization.is_diarizer(info) else self.backend.load(info)

    def _size(self, model: object) -> int:
        nbytes = getattr(model, "nbytes", None)  # the diarizer measures itself
        return nbytes if isinstance(nbytes, int) else self.backend.size(model)

    def _estimate(self, info: ModelInfo) -> int:
        return diarization.estimate_bytes() if diarization.is_diarizer(info) else self.backend.estimate(info)

    @property
    def loaded_models(self) -> list[str]:
        return [m.name for m in self.pool.loaded()]

    def load(self, info: ModelInfo) -> None:
        """``info`` loaded and ready to decode (the start-up model: its first job waits for nothing)."""
        loaded = self.pool.get(info)
        if not diarization.is_diarizer(info):
            self.backend.prepare(loaded)

    def transcribe(
        self,
        audio: AudioInput,
        model: ModelInfo,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None = None,
        duration_hint: float = 0.0,
        on_segments: SegmentCallback | None = None,
        known_speakers: Sequence[tuple[str, AudioInput]] = (),
    ) -> Transcription:
        """Blocking. ``audio`` is a file (decoded here, in a stream where the
        engine allows; ``InvalidAudio`` if it cannot be) or samples;
        ``duration_hint`` (seconds, e.g. from the probe) sizes buffers up front.
        ``on_progress`` gets the fraction done (0..1, never decreasing) after
        each 30 s window, and for ctranslate2 after each segment too; an
        exception it raises (e.g. a cancel) stops decoding there.
        ``on_segments`` gets each window's new segments as soon as they are
        decoded (ctranslate2: each segment). With ``options.diarize`` the
        speakers are found next (``_diarize``), named after ``known_speakers``
        (name, a recording of that voice) where their voices match."""
        words, diarizing = diarization.split_progress(on_progress, options)
        with self.pool.use(model) as loaded:
            result = self.backend.transcribe(
                loaded, audio, diarization.transcription_options(options), words, duration_hint, on_segments
            )
        return self._diarize(result, audio, options, diarizing, known_speakers)

    def _diarize(
        self,
        result: Transcription,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        known_speakers: Sequence[tuple[str, AudioInput]] = (),
    ) -> Transcription:
        if not options.diarize:
            return result
        with self.pool.use(diarization.DIARIZER) as diarizer:
            return diarization.diarize(diarizer, result, audio, options, on_progress, known_speakers)

    def transcribe_batch(
        self, items: Sequence[BatchItem], model: ModelInfo, options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Blocking. ``_decode_batch``, with language routing where the options
        ask for it (``identify_with``): each item's language is identified by
        that multilingual model from its first 30 s, on a thread of its own
        while ``model`` starts decoding (on CPU the decoder runs on one thread,
        so identifying costs English little). English stays on ``model``; with
        ``reroute`` another language stops that decode at its first output and
        goes to the multilingual model, without it the job carries a warning."""
        if options.identify_with is None:
            return self._decode_batch(items, model, options)
        multilingual = self.registry.resolve(options.identify_with, trusted=True)
        plain = replace(options, identify_with=None, reroute=False)
        # A batch's identification starts once its windows are encoded, beside
        # the decode (one thread) rather than the encoder (every core): 8 short
        # clips at once took 5.7 s instead of 6.4 s, 5.2 s unidentified (2 cores).
        encoded = threading.Event()
        if not (len(items) > 1 and self.backend.batching and self.backend.tells_encoded):
            encoded.set()
        heard = _Identification(self._identifier(multilingual), items, encoded)
        sent = [replace(item, on_encoded=encoded.set) for item in items]
        try:
            first = self._decode_batch(
                [_held(item, i, heard) for i, item in enumerate(sent)] if options.reroute else sent, model, plain
            )
        finally:
            encoded.set()
        outcomes: dict[int, Transcription | Exception] = {}
        elsewhere: dict[str, list[int]] = {}  # language -> items the multilingual model decodes
        for i, outcome in enumerate(first):
            found = heard.language(i)
            if isinstance(found, tuple) and found[0] != "en" and options.reroute:
                elsewhere.setdefault(found[0], []).append(i)
            elif isinstance(outcome, Exception) or not isinstance(found, tuple):
                outcomes[i] = outcome  # not identified (audio that will not decode): as decoded
            else:
                outcomes[i] = _routed(outcome, model, model, found)
        for language, indexes in elsewhere.items():
            results = self._decode_batch([items[i] for i in indexes], multilingual, replace(plain, language=language))
            for i, result in zip(indexes, results, strict=True):
                found = heard.language(i)
                assert isinstance(found, tuple)
                outcomes[i] = result if isinstance(result, Exception) else _routed(result, multilingual, model, found)
        return [outcomes[i] for i in range(len(items))]

    def _identifier(self, multilingual: ModelInfo) -> Callable[[Sequence[BatchItem]], list[Heard]]:
        def identify(items: Sequence[BatchItem]) -> list[Heard]:
            heard: list[Heard] = []
            with self.pool.use(multilingual) as loaded:
                for item in items:
                    try:
                        heard.append(self.backend.detect_language(loaded, first_seconds(item.audio, BATCH_MAX_SECONDS)))
                    except Exception as exc:  # audio that will not decode: the decode says so
                        heard.append(exc)
            return heard

        return identify

    def _decode_batch(
        self, items: Sequence[BatchItem], model: ModelInfo, options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Blocking. Several jobs with the same model and options (see
        ``can_batch``); each gets its own outcome, a transcription or the
        exception that ended it (a cancel raised by its progress callback, audio
        that would not decode). Engines without batching run them in turn.
        With ``options.diarize`` each transcription is then diarized."""
        progress = [diarization.split_progress(item.on_progress, options) for item in items]
        items = [replace(item, on_progress=words) for item, (words, _) in zip(items, progress, strict=True)]
        decode = diarization.transcription_options(options)
        with self.pool.use(model) as loaded:
            if len(items) > 1 and self.backend.batching:
                outcomes = self.backend.transcribe_batch(loaded, items, decode)
            else:
                outcomes = []
                for item in items:
                    try:
                        outcomes.append(
                            self.backend.transcribe(
                                loaded, item.audio, decode, item.on_progress, item.duration_hint, item.on_segments
                            )
                        )
                    except Exception as exc:
                        outcomes.append(exc)
        if not options.diarize:
            return outcomes
        diarized: list[Transcription | Exception] = []
        for item, outcome, (_, diarizing) in zip(items, outcomes, progress, strict=True):
            try:
                diarized.append(
                    outcome
                    if isinstance(outcome, Exception)
                    else self._diarize(outcome, item.audio, options, diarizing, item.known_speakers)
                )
            except Exception as exc:  # a cancel during diarization, audio that would not decode
                diarized.append(exc)
        return diarized

    def guess(self, samples: np.ndarray, model: ModelInfo, options: TranscribeOptions) -> Transcription:
        """Blocking. A greedy guess at a growing utterance: the backend's
        quick one where it has one (ctranslate2: the audio encoded as long as
        it is), else a decode as ``transcribe_batch`` runs it (which also
        identifies and routes a language still unknown)."""
        if options.identify_with is None:
            with self.pool.use(model) as loaded:
                quick = self.backend.guess(loaded, samples, options)  # greedy by its contract
            if quick is not None:
                return quick
        outcome = self.transcribe_batch([BatchItem(samples, duration_hint=len(samples) / SAMPLE_RATE)], model, options)[
            0
        ]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def can_batch(self, duration: float, options: TranscribeOptions) -> bool:
        """Whether a job this long, with these options, may share a forward pass with others."""
        return self.backend.batching and 0 < duration <= BATCH_MAX_SECONDS and self.backend.batchable(options)


# A language and how sure its identification was, or why it could not be identified.
Heard = tuple[str, float] | Exception
# The longest identification waits for a batch's encoder (a guard: the
# backend and transcribe_batch always say when it is done).
IDENTIFY_WAIT_S = 60.0


class _Rerouted(Exception):
    """Raised from a held item's first callback: not English, so that decode stops."""


class _Identification:
    """The languages of a batch's items, identified on a thread of their own
    (started by the inference thread, so it shares its CPU priority)."""

    def __init__(
        self,
        identify: Callable[[Sequence[BatchItem]], list[Heard]],
        items: Sequence[BatchItem],
        after: threading.Event,
    ) -> None:
        self._heard: list[Heard] = []
        self._count = len(items)
        self._done = threading.Event()
        args = (identify, items, after)
        threading.Thread(target=self._run, args=args, name="identify-language", daemon=True).start()

    def _run(
        self,
        identify: Callable[[Sequence[BatchItem]], list[Heard]],
        items: Sequence[BatchItem],
        after: threading.Event,
    ) -> None:
        try:
            after.wait(IDENTIFY_WAIT_S)  # the batch's windows encoded (see transcribe_batch)
            self._heard = identify(items)
        except Exception as exc:  # e.g. the multilingual model failed to load: nothing identified
            self._heard = [exc] * self._count
        finally:
            self._done.set()

    def language(self, index: int) -> Heard:
        """Item ``index``'s language; waits until every item is identified."""
        self._done.wait()
        return self._heard[index]


def _held(item: BatchItem, index: int, heard: _Identification) -> BatchItem:
    """``item`` whose progress and segments wait for its language: passed on
    when English (or not identified), ``_Rerouted`` at once when not, so no
    English-only text of another language is ever shown."""
    passed = False

    def through() -> None:
        nonlocal passed
        if not passed:
            found = heard.language(index)
            if isinstance(found, tuple) and found[0] != "en":
                raise _Rerouted(found[0])
            passed = True

    def progress(fraction: float) -> None:
        through()
        if item.on_progress is not None:
            item.on_progress(fraction)

    def segments(decoded: list[Segment]) -> None:
        through()
        if item.on_segments is not None:
            item.on_segments(decoded)

    return replace(item, on_progress=progress, on_segments=segments)


def _routed(result: Transcription, chosen: ModelInfo, asked: ModelInfo, heard: tuple[str, float]) -> Transcription:
    """A routed job's transcription, saying which model decoded it, the
    language heard and how sure that was, and a warning where an English-only
    model decoded another language."""
    language, probability = heard
    warning = None
    if chosen == asked and language != "en" and english_only(asked.name):
        name = LANGUAGES.get(language, language).title()
        warning = (
            f"The audio sounds like {name} ({probability:.0%} sure), but model {model_label(asked.name)!r} "
            "understands English only, so this transcript is likely wrong. Leave the model out (with language "
            "routing on) or name a multilingual model such as 'base'."
        )
    return replace(
        result,
        language=language,
        language_probability=round(probability, 4),
        model=chosen.name,
        warning=warning,
    )


__all__ = ["Transcriber", "default_threads"]
