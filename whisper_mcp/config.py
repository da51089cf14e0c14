"""Service settings: one dataclass, filled from command-line flags and
``WHISPER_MCP_*`` environment variables (flags win)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "WHISPER_MCP_"


def default_model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "whisper-mcp"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    storage: Path = Path("./service-storage")
    model: str = "tiny.en"
    # Where converted packaged weights and downloaded checkpoints are cached.
    model_cache: Path = field(default_factory=default_model_cache)
    device: str = "auto"  # auto | cpu | cuda
    # Inference engine: openai (openai-whisper on torch) or ctranslate2 (faster-whisper).
    engine: str = "openai"
    # default: float16 on CUDA; on CPU float32 (openai) or int8 (ctranslate2).
    compute_type: str = "default"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Short jobs (up to 30 s) queued behind each other with the same model and
    # options are transcribed together, this many at most; 1 turns batching off.
    batch_size: int = 8
    # ctranslate2 engine: decode the speech that voice-activity detection finds,
    # in chunks of up to 30 s, batch_size chunks per forward pass, without
    # timestamp tokens. The fastest CPU mode; each chunk is one segment.
    vad_batching: bool = False
    # Niceness added to the inference threads so that requests win the CPU
    # from inference (0: same priority as the rest of the server).
    inference_nice: int = 10
    log_level: str = "info"
    log_format: str = "text"  # text | json
    # Models other than the start-up one are unloaded after this many idle seconds.
    model_idle_seconds: float = 600.0
    # Total model memory; loading another model unloads least-recently-used ones
    # (never the start-up model) to stay under it. 0: no limit.
    model_memory_mb: int = 0
    # Seconds before callback attempt 2, 3, ...; after the last, delivery gives up.
    callback_retry_delays: str = "1,5,30,120"
    # Base URL put in callback bodies' links; default http://HOST:PORT.
    public_url: str = ""
    # When set, callback bodies are signed: X-Whisper-MCP-Signature: sha256=<HMAC>.
    callback_secret: str = ""
    # Bearer token for /mcp and every REST route but /livez and one-time upload
    # URLs; token_file holds it instead (first line). Empty: no authentication.
    token: str = ""
    token_file: Path | None = None
    # Extra browser origins allowed to call /mcp (comma-separated); loopback
    # origins on our own port are always allowed.
    allowed_origins: str = ""
    max_upload_mb: int = 1024
    max_audio_seconds: float = 4 * 3600.0
    # Refuse uploads (507) when the storage disk would have less free than this.
    min_free_mb: int = 512
    # Delete a job's audio once the job has ended.
    delete_audio: bool = True
    # Ended jobs and their transcripts are removed after this many days (0: keep).
    retention_days: float = 7.0
    # Chunked uploads and one-time upload URLs expire after this long unused.
    upload_ttl_seconds: float = 3600.0
    # How often expired uploads and jobs are swept.
    housekeeping_seconds: float = 60.0
    # Upper bound for check_transcription_status(wait_seconds=...): stays under
    # the 60 s tool timeout that MCP clients such as Codex use by default.
    max_wait_seconds: float = 50.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Defaults, then ``WHISPER_MCP_<FIELD>`` variables, then non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, raw)
        values.update({k: _coerce(k, v) for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def resolved_token(self) -> str | None:
        """The bearer token, from ``token`` or the first line of ``token_file``."""
        if self.token:
            return self.token
        if self.token_file is not None:
            try:
                first = self.token_file.read_text().strip().splitlines()
            except OSError as exc:
                raise SystemExit(f"cannot read token file {self.token_file}: {exc}") from None
            if not first or not first[0].strip():
                raise SystemExit(f"token file {self.token_file} is empty")
            return first[0].strip()
        return None


def _coerce(name: str, value: object) -> object:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if not isinstance(value, str):
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}={value!r} is not a number") from None
    if kind in ("Path", "Path | None"):
        return Path(value).expanduser()
    if kind == "bool":
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}={value!r} must be true or false")
    return value
