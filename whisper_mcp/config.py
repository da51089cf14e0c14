"""Service settings: one typed dataclass, filled from command-line flags and
``WHISPER_MCP_*`` environment variables (flags win), parsed once.

Each field carries its help text (and its choices, where it has them) as
metadata, so the ``serve`` command's flags are generated from this one place.
Parsing raises ``ConfigError``; only the CLI turns that into an exit.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "WHISPER_MCP_"

# The choices, defined once: the CLI's flags, validation and the engines use these.
ENGINES = ("openai", "ctranslate2")
ENGINE_ALIASES = {
    "faster-whisper": "ctranslate2",
    "faster_whisper": "ctranslate2",
    "ct2": "ctranslate2",
    "torch": "openai",
}
# ctranslate2 by default: on CPU it is ~2x faster with int8 weights, at
# faster-whisper's accuracy, in a third of the memory (no torch); openai
# loads .pt checkpoints and batches short jobs (bench/ section engine).
DEFAULT_ENGINE = "ctranslate2"
COMPUTE_TYPES = ("default", "int8", "int8_float32", "int8_float16", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# ``--decoder-threads auto`` (engines.decoder_threads).
AUTO_DECODER_THREADS = -1


def engine_name(value: str | None) -> str:
    """The engine a setting names (any case, an alias, empty for the default),
    or ``ValueError`` listing the choices."""
    name = (value or DEFAULT_ENGINE).strip().lower()
    name = ENGINE_ALIASES.get(name, name)
    if name not in ENGINES:
        raise ValueError(f"Unknown engine {value!r}; choose one of {', '.join(ENGINES)}.")
    return name


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says what would do."""


def default_model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "whisper-mcp"


def _opt(default: Any = MISSING, *, help: str, choices: tuple[str, ...] | None = None, **extra: Any) -> Any:
    """A field with its help text; ``default_factory`` passes through ``extra``."""
    metadata = {"help": help, "choices": choices, **{k: v for k, v in extra.items() if k != "default_factory"}}
    if "default_factory" in extra:
        return field(default_factory=extra["default_factory"], metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    host: str = _opt("127.0.0.1", help="bind address")
    port: int = _opt(8765, help="TCP port")
    storage: Path = _opt(
        Path("./service-storage"),
        help="folder for audio and transcripts (and the job database, without --database-url); "
        "replicas share one, on a shared filesystem",
    )
    database_url: str = _opt(
        "",
        help="postgresql://... : the job queue in PostgreSQL, shared by every replica (default: SQLite in --storage)",
    )
    storage_url: str = _opt(
        "",
        help="s3://bucket/prefix : audio, transcripts and uploads in an S3 bucket, shared by replicas on separate "
        "machines; --storage then holds only scratch files (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        parse=lambda text: _storage_url(text),
    )
    storage_endpoint: str = _opt(
        "",
        help="the S3 endpoint of --storage-url, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL, else AWS)",
    )
    storage_region: str = _opt(
        "", help="the region of --storage-url (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1)"
    )
    replica_id: str = _opt("", help="this replica's name in leases and logs (default: host name and process id)")
    lease_seconds: float = _opt(
        30.0, help="a running job's claim lasts this long unless renewed; then any replica takes it"
    )
    heartbeat_seconds: float = _opt(
        10.0, help="how often running jobs' claims are renewed (well under --lease-seconds)"
    )
    model: str = _opt("tiny.en", help="model loaded at start-up and used when a job names none")
    language_routing: bool = _opt(
        True,
        help="when the start-up model is English-only and a job names neither a model nor a language: "
        "identify the language first (one encoder pass of --multilingual-model over the first 30 s) and "
        "decode other languages with the multilingual model; jobs that name an English-only model are "
        "checked the same way and warned, never rerouted",
    )
    multilingual_model: str = _opt(
        "base", help="the multilingual model that language routing identifies languages with and decodes them by"
    )
    model_cache: Path = _opt(
        help="folder for converted and downloaded weights (default ~/.cache/whisper-mcp)",
        default_factory=default_model_cache,
    )
    device: str = _opt("auto", help="where inference runs", choices=DEVICES)
    engine: str = _opt(
        DEFAULT_ENGINE,
        help="inference engine: ctranslate2 (faster-whisper, int8 on CPU) or openai (openai-whisper on torch; "
        "needed for .pt checkpoints)",
        choices=ENGINES,
    )
    compute_type: str = _opt(
        "default",
        help="weights/arithmetic; default: float16 on CUDA, on CPU float32 (openai) or int8 (ctranslate2)",
        choices=COMPUTE_TYPES,
    )
    # The int8 encoder is where int8 loses accuracy; a float32 encoder costs
    # little time, since greedy decoding dominates (models.encoder).
    encoder_compute_type: str = _opt(
        "default",
        help="the encoder's weights/arithmetic (ctranslate2): default: float32 on CPU when compute_type is int8, "
        "else the same as compute_type; same: one model for both",
        choices=("default", "same", *COMPUTE_TYPES[1:]),
    )
    threads: int = _opt(0, help="inference CPU threads, 0 = one per physical core (or OMP_NUM_THREADS)")
    default_beam_size: int = _opt(
        0, help="beam of jobs that set no beam_size: 0 = the engine's (ctranslate2 2, openai 1 = greedy)"
    )
    # Greedy decoding's small per-token products lose more to the threads'
    # fork and join than they gain (models.encoder, engines.decoder_threads).
    decoder_threads: int = _opt(
        AUTO_DECODER_THREADS,
        help="CPU threads of the ctranslate2 decoder (the encoder uses --threads); 0 = --threads; auto (the "
        "default): one on up to 4 cores, on more timed once per model at its first load and cached",
        parse=lambda text: _threads_or_auto(text),
    )
    # Measured on tiny.en: a fifth of the encoder's time on short clips, the
    # recordings' word errors unchanged (engines.windows; bench/ section settings).
    fit_windows: bool = _opt(
        True,
        help="ctranslate2, English-only models: encode a window with less than 30 s of audio at its length "
        "plus 2-12 s of silence (in 10 s steps) rather than padded to 30 s; false: pad every window to 30 s, "
        "as faster-whisper does",
    )
    batch_size: int = _opt(
        8,
        help="windows per forward pass: short queued jobs with the same options (openai engine) "
        "or VAD chunks (--vad-batching); 1 = off",
    )
    # Off by default: on bench/ section 8's clips it ties sequential decoding
    # on time and loses on accuracy over a 4-minute file (no context between
    # chunks, no temperature fallback), though it wins on short ones.
    vad_batching: bool = _opt(
        False,
        help="ctranslate2 engine: decode the speech VAD finds in chunks of up to 30 s cut at pauses, "
        "several per forward pass, with timestamps (chunks see no earlier text and have no temperature "
        "fallback; silence costs nothing)",
        flag="--vad-batching",
        const=True,
        value_optional=True,
        parse=lambda text: _bool(text),
    )
    vad_filter: bool = _opt(
        False,
        help="what a job's vad_filter option is when it sets none: decode only the speech voice-activity "
        "detection finds (both engines; timestamps stay in the recording's timeline)",
    )
    # 0 by default: beside other busy processes a niced inference thread gets
    # a fraction of its fair share (10.8x slower at 10, 1.9x at 0; bench/ contention).
    inference_nice: int = _opt(0, help="niceness added to the inference threads so requests win the CPU, 0 = none")
    log_level: str = _opt("info", help="log level", choices=LOG_LEVELS)
    log_format: str = _opt("text", help="one line per event; json for log shippers", choices=LOG_FORMATS)
    model_idle_seconds: float = _opt(600.0, help="unload models other than the start-up one after this idle time")
    model_memory_mb: int = _opt(
        0, help="memory budget for loaded models; least recently used ones are unloaded to fit, 0 = none"
    )
    callback_retry_delays: tuple[float, ...] = _opt(
        (1.0, 5.0, 30.0, 120.0), help="seconds before callback attempt 2, 3, ... (comma-separated); then it gives up"
    )
    public_url: str = _opt("", help="base URL used in callback bodies and upload URLs (default http://HOST:PORT)")
    callback_secret: str = _opt("", help="HMAC-SHA256 key: callback bodies are signed in X-Whisper-MCP-Signature")
    callback_allow: tuple[str, ...] = _opt(
        (),
        help="hosts, addresses or CIDRs that callbacks may reach although loopback or private, comma-separated "
        "(loopback is allowed anyway while --host is loopback; link-local and metadata addresses never are)",
        parse=lambda text: _hosts_or_networks(text),
    )
    callback_concurrency: int = _opt(8, help="callbacks delivered at once; a slow receiver holds up one of these only")
    # The token itself, from --token or the first line of --token-file (read once).
    token: str = _opt("", help="bearer token required on /mcp and the REST routes (empty: no authentication)")
    token_file: Path | None = _opt(None, help="file whose first line is the token")
    allowed_origins: tuple[str, ...] = _opt(
        (), help="extra browser origins allowed, comma-separated (loopback on our port always is)"
    )
    allowed_hosts: tuple[str, ...] = _opt(
        (),
        help="host names clients may use to reach the server, comma-separated, * for any (loopback names, "
        "the --host address and the --public-url host always are); others get 421, against DNS rebinding",
    )
    max_connections: int = _opt(
        1000,
        help="open HTTP connections at most (lowered to fit ulimit -n); at the cap the longest-idle one is "
        "closed for a new one, and with none idle the new one gets 503",
    )
    header_timeout_seconds: float = _opt(10.0, help="a request's line and headers must arrive within this")
    body_timeout_seconds: float = _opt(
        60.0, help="a request body (an upload) that sends nothing for this long is dropped"
    )
    keep_alive_seconds: float = _opt(5.0, help="an idle keep-alive connection is closed after this")
    max_realtime_sessions: int = _opt(
        0,
        help="live transcription sessions (/v1/realtime) at once; more are refused until one ends; "
        "0 = one per CPU core",
    )
    max_upload_mb: int = _opt(1024, help="largest upload")
    max_audio_seconds: float = _opt(4 * 3600.0, help="longest recording")
    min_free_mb: int = _opt(512, help="refuse uploads (507) when the storage disk would have less free than this")
    delete_audio: bool = _opt(True, help="keep uploaded audio after its job ends", flag="--keep-audio", const=False)
    retention_days: float = _opt(7.0, help="remove ended jobs and their transcripts after this many days, 0 = keep")
    upload_ttl_seconds: float = _opt(3600.0, help="expiry of unfinished uploads and unused upload URLs")
    housekeeping_seconds: float = _opt(60.0, help="interval of expiry sweeps")
    # Stays under the 60 s tool timeout MCP clients such as Codex use by default.
    max_wait_seconds: float = _opt(50.0, help="upper bound of check_transcription_status(wait_seconds=...)")

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``WHISPER_MCP_<FIELD>`` variables, then non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw, f"{ENV_PREFIX}{f.name.upper()}")
        for name, value in overrides.items():
            if value is not None:
                values[name] = _parse(_FIELDS[name], value, "--" + name.replace("_", "-"))
        if values.get("token_file") and not values.get("token"):
            values["token"] = _read_token(values["token_file"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(Settings)}


def _read_token(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"token file {path} is empty; put the token on its first line")
    return lines[0].strip()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _storage_url(text: str) -> str:
    url = text.strip()
    if url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^?#]*)?", url):
        raise ValueError(
            "must be s3://bucket or s3://bucket/prefix (a bucket name of 3 to 63 lowercase letters, digits, dots and dashes)"
        )
    return url


def _delays(text: str) -> tuple[float, ...]:
    delays = tuple(float(part) for part in text.split(",") if part.strip())
    if any(d < 0 for d in delays):
        raise ValueError("must not be negative")
    return delays


def _threads_or_auto(text: str) -> int:
    value = text.strip().lower()
    if value == "auto":
        return AUTO_DECODER_THREADS
    if not value.isdigit():
        raise ValueError("must be auto or a whole number of threads (0: the same as --threads)")
    return int(value)


def _hosts_or_networks(text: str) -> tuple[str, ...]:
    entries = tuple(part.strip() for part in text.split(",") if part.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry):
                raise ValueError(f"must be host names, addresses or CIDRs; {entry!r} is none of these") from None
    return entries


_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")

_PARSERS: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "bool": _bool,
    "Path": lambda text: Path(text).expanduser(),
    "Path | None": lambda text: Path(text).expanduser(),
    "tuple[float, ...]": _delays,
    "tuple[str, ...]": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
}


def _parse(f: Field[Any], value: object, source: str) -> object:
    """A flag's or variable's text as the field's type; ``source`` names it in errors."""
    if isinstance(value, str):
        try:
            value = (f.metadata.get("parse") or _PARSERS.get(str(f.type), str))(value)
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else f"must be of type {f.type}"
            raise ConfigError(f"{source}={value!r}: {reason}") from None
    choices = f.metadata.get("choices")
    if choices and isinstance(value, str):
        value = value.strip().lower()
        value = ENGINE_ALIASES.get(value, value) if f.name == "engine" else value
        if value not in choices:
            raise ConfigError(f"{source}={value!r}: choose one of {', '.join(choices)}")
    return value
