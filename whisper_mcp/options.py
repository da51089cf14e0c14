"""Per-job choices and their validation: pure functions, one clear error each."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, TypedDict

from whisper_mcp.errors import InvalidInput
from whisper_mcp.languages import LANGUAGES, TO_LANGUAGE_CODE

# Lower runs first.
PriorityName = Literal["urgent", "normal", "low"]
PRIORITY_NAMES: dict[int, PriorityName] = {0: "urgent", 1: "normal", 2: "low"}
PRIORITIES: dict[str, int] = {name: rank for rank, name in PRIORITY_NAMES.items()}
TASKS = ("transcribe", "translate")
MAX_BEAM_SIZE = 10
MAX_PROMPT_CHARS = 1000
MAX_HOTWORDS_CHARS = 1000
# Engines whose decoder takes hotwords (faster-whisper's ``hotwords``).
HOTWORD_ENGINES = ("ctranslate2",)
# openai-whisper's temperature fallback schedule, used when a job sets none.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Speaker count hints: senko's spectral clustering looks for 1 to 15 speakers.
MAX_SPEAKERS = 15
SPEAKER_HINTS = ("num_speakers", "min_speakers", "max_speakers")


@dataclass(frozen=True)
class TranscribeOptions:
    """Decoding choices, in the spirit of openai-whisper's DecodingOptions."""

    language: str | None = None  # None: detect it (multilingual models)
    task: str = "transcribe"
    initial_prompt: str | None = None
    # None: openai-whisper's fallback schedule 0.0, 0.2, ... 1.0.
    temperature: float | None = None
    beam_size: int | None = None  # None: the engine's default (--default-beam-size)
    word_timestamps: bool = False
    # Speaker diarization, and its speaker count hints (diarize only).
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Decode only the speech that voice-activity detection (Silero VAD) finds;
    # timestamps stay in the recording's own timeline.
    vad_filter: bool = False
    # Words or names to bias decoding toward; engines without it refuse it
    # (check_engine_options).
    hotwords: str | None = None
    # Known speakers (diarize only): (given name, SHA-256 of the reference
    # recording stored with the job), so the cache key tells references apart.
    known_speakers: tuple[tuple[str, str], ...] = ()
    # Language routing, for a job on an English-only model with no language
    # given: the multilingual model that first identifies the language from
    # the first 30 s. With ``reroute`` a language other than English is
    # decoded by that model instead; without, the job carries a warning.
    identify_with: str | None = None
    reroute: bool = False

    def to_json(self) -> str:
        """Canonical form: stored with the job and part of the transcript cache key.
        Fields added since the first release are left out while they hold their
        defaults, so the form (and the cache key) of a job that does not use
        them is what it was before they existed: transcripts cached by an
        earlier release are still found after an upgrade."""
        data = asdict(self)
        for name in _LATER_FIELDS:
            if data[name] == _DEFAULTS[name]:
                del data[name]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TranscribeOptions:
        data = json.loads(text)
        if "known_speakers" in data:  # JSON lists back to the hashable tuples
            data["known_speakers"] = tuple((str(n), str(h)) for n, h in data["known_speakers"])
        return cls(**data)


# Everything after word_timestamps came after the first release's options.
_LATER_FIELDS = (
    "diarize",
    *SPEAKER_HINTS,
    "vad_filter",
    "hotwords",
    "known_speakers",
    "identify_with",
    "reroute",
)
_DEFAULTS = asdict(TranscribeOptions())


def temperatures(options: TranscribeOptions) -> tuple[float, ...]:
    """The temperatures decoding tries in turn, falling back to the next when a
    window's output looks wrong (repetitive, or improbable)."""
    return FALLBACK_TEMPERATURES if options.temperature is None else (options.temperature,)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def english_only(model: str) -> bool:
    """Whether a model (by name or path) knows English alone (Whisper's ``.en`` models)."""
    return model.rstrip("/").removesuffix(".pt").endswith(".en")


def parse_language(language: str | None, model: str) -> str | None:
    if _blank(language) or str(language).strip().lower() in ("auto", "detect"):
        return None
    lang = str(language).strip().lower()
    code = lang if lang in LANGUAGES else TO_LANGUAGE_CODE.get(lang)
    if code is None:
        raise InvalidInput(
            f"Unknown language {language!r}. Use a code such as 'en', 'de', 'fr' or a name such as "
            "'german', or leave it out to detect the language."
        )
    if english_only(model) and code != "en":
        raise InvalidInput(f"Model {model!r} is English-only; choose a multilingual model for language {code!r}.")
    return code


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if _blank(value):
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {value!r}.")


def parse_options(
    model: str,
    *,
    language: str | None = None,
    task: str | None = None,
    initial_prompt: str | None = None,
    temperature: float | str | None = None,
    beam_size: int | str | None = None,
    word_timestamps: bool | str | None = None,
    diarize: bool | str | None = None,
    num_speakers: int | str | None = None,
    min_speakers: int | str | None = None,
    max_speakers: int | str | None = None,
    vad_filter: bool | str | None = None,
    hotwords: str | None = None,
    vad_default: bool = False,
) -> TranscribeOptions:
    task_name = "transcribe" if _blank(task) else str(task).strip().lower()
    if task_name not in TASKS:
        raise InvalidInput(f"task must be 'transcribe' or 'translate' (into English), got {task!r}.")
    if task_name == "translate" and english_only(model):
        raise InvalidInput(f"Model {model!r} is English-only and cannot translate; choose a multilingual model.")

    temp: float | None = None
    if not _blank(temperature):
        try:
            temp = float(temperature)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"temperature must be a number from 0 to 1, got {temperature!r}.") from None
        if not 0.0 <= temp <= 1.0:
            raise InvalidInput(f"temperature must be from 0 to 1, got {temp}.")

    beam: int | None = None
    if not _blank(beam_size):
        try:
            beam = int(str(beam_size).strip())
        except ValueError:
            raise InvalidInput(
                f"beam_size must be a whole number from 1 to {MAX_BEAM_SIZE}, got {beam_size!r}."
            ) from None
        if not 1 <= beam <= MAX_BEAM_SIZE:
            raise InvalidInput(f"beam_size must be from 1 to {MAX_BEAM_SIZE}, got {beam}.")
        if temp not in (None, 0.0):
            raise InvalidInput("beam_size applies to temperature 0 only; leave temperature out or set it to 0.")

    prompt = None if _blank(initial_prompt) else str(initial_prompt)
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"initial_prompt is limited to {MAX_PROMPT_CHARS} characters, got {len(prompt)}.")

    return TranscribeOptions(
        language=parse_language(language, model),
        task=task_name,
        initial_prompt=prompt,
        temperature=temp,
        beam_size=beam,
        word_timestamps=parse_bool("word_timestamps", word_timestamps),
        vad_filter=vad_default if _blank(vad_filter) else parse_bool("vad_filter", vad_filter),
        hotwords=parse_hotwords(hotwords),
        **parse_diarization(diarize, num_speakers, min_speakers, max_speakers),
    )


def parse_hotwords(hotwords: object) -> str | None:
    if _blank(hotwords):
        return None
    if not isinstance(hotwords, str):
        raise InvalidInput(f"hotwords must be text (words or names, separated by spaces), got {hotwords!r}.")
    text = " ".join(hotwords.split())
    if len(text) > MAX_HOTWORDS_CHARS:
        raise InvalidInput(f"hotwords is limited to {MAX_HOTWORDS_CHARS} characters, got {len(text)}.")
    return text


def check_engine_options(options: TranscribeOptions, engine: str) -> None:
    """Refuse what this server's engine cannot do, naming the engine."""
    if options.hotwords is not None and engine not in HOTWORD_ENGINES:
        raise InvalidInput(
            f"hotwords is not supported by this server's engine {engine!r}; only the "
            f"{', '.join(HOTWORD_ENGINES)} engine takes it. Leave hotwords out, or put the words in initial_prompt."
        )


def _speaker_count(name: str, value: object) -> int | None:
    if _blank(value):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number from 1 to {MAX_SPEAKERS}, got {value!r}.") from None
    if not 1 <= count <= MAX_SPEAKERS:
        raise InvalidInput(f"{name} must be from 1 to {MAX_SPEAKERS}, got {count}.")
    return count


class Diarization(TypedDict):
    """The diarization fields of ``TranscribeOptions``."""

    diarize: bool
    num_speakers: int | None
    min_speakers: int | None
    max_speakers: int | None


def parse_diarization(diarize: object, num_speakers: object, min_speakers: object, max_speakers: object) -> Diarization:
    """The diarization fields of ``TranscribeOptions``; hints without diarize,
    out of range or contradicting each other are refused, never ignored."""
    on = parse_bool("diarize", diarize)
    hints = {
        "num_speakers": _speaker_count("num_speakers", num_speakers),
        "min_speakers": _speaker_count("min_speakers", min_speakers),
        "max_speakers": _speaker_count("max_speakers", max_speakers),
    }
    given = [name for name, value in hints.items() if value is not None]
    if given and not on:
        raise InvalidInput(f"{', '.join(given)} only apply with diarize=true; set diarize or leave them out.")
    low, high, num = hints["min_speakers"], hints["max_speakers"], hints["num_speakers"]
    if low is not None and high is not None and low > high:
        raise InvalidInput(f"min_speakers ({low}) is more than max_speakers ({high}).")
    if num is not None and ((low is not None and num < low) or (high is not None and num > high)):
        raise InvalidInput(f"num_speakers ({num}) is outside min_speakers..max_speakers; give one or the other.")
    return Diarization(diarize=on, num_speakers=num, min_speakers=low, max_speakers=high)


def parse_priority(priority: str | None) -> int:
    if _blank(priority):
        return PRIORITIES["normal"]
    rank = PRIORITIES.get(str(priority).strip().lower())
    if rank is None:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}.")
    return rank
