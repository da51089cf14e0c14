"""What every engine shares: the choices, the result records, a batch item,
the ``Backend`` protocol each inference library implements and the ``Engine``
protocol the server asks of ``transcriber.Transcriber``.

Both backends (``openai``, ``ctranslate2``), the model registry and the server
depend on this module; it imports no other engine module, so no backend
imports another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

# The choices are defined once, with the settings (stdlib only): ENGINES, the
# other names a setting may use for one (ENGINE_ALIASES), and every
# compute_type a setting may name (COMPUTE_TYPES; each engine accepts a subset).
from whisper_mcp.config import COMPUTE_TYPES, ENGINE_ALIASES, ENGINES

if TYPE_CHECKING:  # they import torch; this module stays light
    from whisper_mcp.models.pool import LoadedModel
    from whisper_mcp.models.registry import ModelInfo
    from whisper_mcp.options import TranscribeOptions

# Jobs up to this long are one 30 s decoding window, the part a batch decodes.
BATCH_MAX_SECONDS = 30.0

ProgressCallback = Callable[[float], None]
# Called with the segments a window has just added, in order, before that
# window's progress is reported; an exception it raises stops decoding.
SegmentCallback = Callable[[list["Segment"]], None]
# What a backend transcribes: an audio file (decoded by the backend, in a
# stream where it can) or float32 16 kHz mono samples.
AudioInput = Path | np.ndarray


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    # What the decoder reported for the window this segment came from (None
    # where an engine does not say): its position in mel frames, the token
    # ids, the temperature that was kept, and the confidence figures clients
    # use to drop hallucinations.
    seek: int | None = None
    tokens: list[int] | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None

    # Set when the job asked for diarization (SPEAKER_00, ... or a given name).
    speaker: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, without the fields this engine left unset."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str | None
    duration: float
    segments: list[Segment] = field(default_factory=list)
    # Probability of the detected language, when it was detected.
    language_probability: float | None = None
    # Diarized jobs only: speakers, num_speakers, turns (and notes), merged
    # into the stored result's top level.
    diarization: dict[str, Any] | None = None
    # Language routing only: the model that decoded it, and a plain warning
    # when an English-only model decoded what sounds like another language.
    model: str | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["segments"] = [s.to_dict() for s in self.segments]
        diarization = data.pop("diarization")
        if diarization is not None:
            data.update(diarization)
        for name in ("model", "warning"):  # stored results without them read as before
            if data[name] is None:
                del data[name]
        return data


@dataclass(frozen=True)
class BatchItem:
    """One job of a batch: its audio and where its progress goes."""

    audio: AudioInput
    duration_hint: float = 0.0
    on_progress: ProgressCallback | None = None
    on_segments: SegmentCallback | None = None
    # Diarized jobs naming known speakers: (name, a recording of that voice alone).
    known_speakers: tuple[tuple[str, AudioInput], ...] = ()
    # Called once the batch's first windows are encoded (or will not be), by a
    # backend whose ``tells_encoded`` is true: language identification waits for
    # it, so the two encoders do not share the cores (ctranslate2 on CPU).
    on_encoded: Callable[[], None] | None = None


@dataclass(frozen=True)
class Decoded:
    """What a decoder says about the window a segment came from."""

    seek: int | None
    tokens: Sequence[int] | None
    temperature: float | None
    avg_logprob: float | None
    compression_ratio: float | None
    no_speech_prob: float | None


def make_segment(
    index: int,
    start: float,
    end: float,
    text: str,
    words: list[tuple[str, float, float, float]] | None,
    decoded: Decoded | None = None,
) -> Segment:
    """A Segment with the rounding every engine uses: times to ms, probabilities to 4 places."""
    return Segment(
        index,
        round(float(start), 3),
        round(float(end), 3),
        str(text).strip(),
        None
        if words is None
        else [Word(str(w), round(float(s), 3), round(float(e), 3), round(float(p), 4)) for w, s, e, p in words],
        *(
            ()
            if decoded is None
            else (
                None if decoded.seek is None else int(decoded.seek),
                None if decoded.tokens is None else [int(t) for t in decoded.tokens],
                _rounded(decoded.temperature, 2),
                _rounded(decoded.avg_logprob, 4),
                _rounded(decoded.compression_ratio, 4),
                _rounded(decoded.no_speech_prob, 4),
            )
        ),
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


class Backend(Protocol):
    """One inference library (``openai.OpenAIBackend``,
    ``ctranslate2.CTranslate2Backend``), as ``transcriber.Transcriber`` drives it.
    The model pool holds what ``load`` returns."""

    name: str
    device: str
    compute_type: str  # resolved: never "default"
    encoder_compute_type: str  # the encoder's, when it differs (ctranslate2 on CPU)
    default_beam_size: int  # the beam of jobs that ask for none; 1 = greedy
    # Whether transcribe_batch() decodes several jobs in one forward pass.
    batching: bool
    # transcribe_batch calls each item's ``on_encoded`` once the batch's first
    # windows are encoded (language identification waits for it).
    tells_encoded: bool

    def load(self, info: ModelInfo) -> Any: ...

    def prepare(self, model: Any) -> None:
        """``model`` ready to decode now: what ``load`` left for its first
        decode (ctranslate2: the encoder-only copy) loaded."""

    def size(self, model: Any) -> int: ...

    def estimate(self, info: ModelInfo) -> int: ...

    def batchable(self, options: TranscribeOptions) -> bool:
        """Whether jobs with these options may share a forward pass; False without batching."""

    def detect_language(self, model: Any, samples: np.ndarray) -> tuple[str, float]:
        """The language most likely spoken in ``samples`` (up to 30 s), and its
        probability: one encoder pass of a multilingual model."""

    def transcribe(
        self,
        model: Any,
        audio: AudioInput,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None,
        duration_hint: float = 0.0,
        on_segments: SegmentCallback | None = None,
    ) -> Transcription: ...

    def transcribe_batch(
        self, model: Any, items: Sequence[BatchItem], options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """Jobs that ``batchable`` allows together, their first windows in one
        forward pass; one outcome per item. Called only when ``batching``."""

    def guess(self, model: Any, samples: np.ndarray, options: TranscribeOptions) -> Transcription | None:
        """A quick greedy guess at the words of a short, growing utterance
        (live transcription's partial decodes); None where this backend has
        none quicker than ``transcribe`` for these options."""


class ModelCatalog(Protocol):
    """The models on offer (``models.registry.ModelRegistry``): names to ``ModelInfo``."""

    def resolve(self, name: str, *, trusted: bool = False) -> ModelInfo:
        """The model ``name`` means; ``UnknownModel`` (saying why) if none."""

    def available(self) -> list[ModelInfo]: ...


class LoadedModels(Protocol):
    """What is loaded (``models.pool.ModelPool``), and how often models came and went."""

    loads: int
    unloads: int

    def loaded(self) -> list[LoadedModel]: ...

    def sweep(self) -> list[str]:
        """Unload what has been idle too long; the names unloaded."""


class Engine(Protocol):
    """What the server asks of an engine (``transcriber.Transcriber``, or a fake in
    tests). Every method blocks; only the inference thread calls them, except
    the read-only attributes."""

    # Read-only here (properties), so an implementation may narrow their types.
    @property
    def engine(self) -> str:
        """ "openai" or "ctranslate2"."""

    @property
    def compute_type(self) -> str:
        """Resolved: never "default"."""

    @property
    def encoder_compute_type(self) -> str:
        """The same as compute_type unless the encoder runs apart."""

    @property
    def default_beam_size(self) -> int:
        """The beam of jobs that ask for none; 1 = greedy."""

    @property
    def device(self) -> str: ...

    @property
    def registry(self) -> ModelCatalog: ...

    @property
    def pool(self) -> LoadedModels: ...

    @property
    def loaded_models(self) -> list[str]: ...

    def load(self, info: ModelInfo) -> None: ...

    def transcribe_batch(
        self, items: Sequence[BatchItem], model: ModelInfo, options: TranscribeOptions
    ) -> list[Transcription | Exception]:
        """One outcome per item: its transcription, or the exception that ended it."""

    def can_batch(self, duration: float, options: TranscribeOptions) -> bool:
        """Whether a job this long, with these options, may share a forward pass."""

    def guess(self, samples: np.ndarray, model: ModelInfo, options: TranscribeOptions) -> Transcription:
        """A quick guess at the words of a growing utterance (16 kHz
        ``samples``, up to 30 s): greedy, and cheaper than a decode where
        the backend allows; the engine's decode where it does not."""


__all__ = [
    "BATCH_MAX_SECONDS",
    "COMPUTE_TYPES",
    "ENGINE_ALIASES",
    "ENGINES",
    "AudioInput",
    "Backend",
    "BatchItem",
    "Decoded",
    "Engine",
    "LoadedModels",
    "ModelCatalog",
    "ProgressCallback",
    "Segment",
    "SegmentCallback",
    "Transcription",
    "Word",
    "make_segment",
]


def engine_label(engine: Engine) -> str:
    """What a job records as its engine (``ctranslate2/int8``,
    ``ctranslate2/int8+float32-encoder+beam2``): results are reused only from
    jobs decoded the same way."""
    label = f"{engine.engine}/{engine.compute_type}"
    if engine.encoder_compute_type != engine.compute_type:
        label += f"+{engine.encoder_compute_type}-encoder"
    if engine.default_beam_size != 1:
        label += f"+beam{engine.default_beam_size}"
    return label
