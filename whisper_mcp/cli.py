"""Command line: ``whisper-mcp serve`` runs the service; ``whisper-mcp prepare-model``
converts/caches a model ahead of time (used by ``make``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from whisper_mcp.client.cli import CLIENT_COMMANDS, add_client_commands, run_client_command
from whisper_mcp.config import ENV_PREFIX, Settings
from whisper_mcp.logs import configure as configure_logging


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the service (MCP at /mcp, REST routes beside it)")
    env = lambda name: f"(env {ENV_PREFIX}{name})"  # noqa: E731
    p.add_argument("--host", help=f"bind address, default 127.0.0.1 {env('HOST')}")
    p.add_argument("--port", type=int, help=f"default 8765 {env('PORT')}")
    p.add_argument("--storage", help=f"folder for the job database, audio and transcripts {env('STORAGE')}")
    p.add_argument("--model", help=f"model loaded at start-up, default tiny.en {env('MODEL')}")
    p.add_argument("--model-cache", help=f"folder for converted and downloaded weights {env('MODEL_CACHE')}")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"default auto {env('DEVICE')}")
    p.add_argument(
        "--engine", choices=["openai", "ctranslate2"],
        help=f"inference engine: openai (openai-whisper, default) or ctranslate2 (faster-whisper, ~2x faster on CPU) {env('ENGINE')}",
    )  # fmt: skip
    p.add_argument(
        "--compute-type", choices=["default", "int8", "int8_float32", "int8_float16", "float32", "float16", "bfloat16"],
        help=f"weights/arithmetic; default: ctranslate2 int8 on CPU, float16 on CUDA; openai float32/float16 {env('COMPUTE_TYPE')}",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help=f"torch CPU threads, 0 = torch default {env('THREADS')}")
    p.add_argument(
        "--inference-nice", type=int,
        help=f"niceness added to inference threads so requests win the CPU, 0 = none, default 10 {env('INFERENCE_NICE')}",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int,
        help=f"windows per forward pass: short queued jobs (openai engine) or VAD chunks (--vad-batching); 1 = off, default 8 {env('BATCH_SIZE')}",
    )  # fmt: skip
    p.add_argument(
        "--vad-batching", action="store_const", const=True,
        help=f"ctranslate2 engine: decode VAD-found speech chunks in batches, without timestamp tokens (fastest on CPU) {env('VAD_BATCHING')}=true",
    )  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help=f"{env('LOG_LEVEL')}")
    p.add_argument("--log-format", choices=["text", "json"], help=f"one line per event; json for log shippers {env('LOG_FORMAT')}")
    p.add_argument("--model-idle-seconds", type=float, help=f"unload other models after this idle time, default 600 {env('MODEL_IDLE_SECONDS')}")
    p.add_argument("--model-memory-mb", type=int, help=f"memory budget for loaded models, 0 = none {env('MODEL_MEMORY_MB')}")
    p.add_argument("--callback-retry-delays", help=f"seconds between callback attempts, default 1,5,30,120 {env('CALLBACK_RETRY_DELAYS')}")
    p.add_argument("--token", help=f"bearer token required on /mcp and the REST routes {env('TOKEN')}")
    p.add_argument("--token-file", help=f"file whose first line is the token {env('TOKEN_FILE')}")
    p.add_argument("--allowed-origins", help=f"extra browser origins allowed, comma-separated {env('ALLOWED_ORIGINS')}")
    p.add_argument("--max-upload-mb", type=int, help=f"largest upload, default 1024 {env('MAX_UPLOAD_MB')}")
    p.add_argument("--max-audio-seconds", type=float, help=f"longest recording, default 14400 {env('MAX_AUDIO_SECONDS')}")
    p.add_argument("--min-free-mb", type=int, help=f"refuse uploads below this free disk, default 512 {env('MIN_FREE_MB')}")
    p.add_argument(
        "--keep-audio", action="store_const", const=False, dest="delete_audio",
        help=f"keep uploaded audio after its job ends {env('DELETE_AUDIO')}=false",
    )  # fmt: skip
    p.add_argument("--retention-days", type=float, help=f"remove ended jobs after this, 0 = keep, default 7 {env('RETENTION_DAYS')}")
    p.add_argument("--upload-ttl-seconds", type=float, help=f"expiry of unfinished uploads and upload URLs, default 3600 {env('UPLOAD_TTL_SECONDS')}")
    p.add_argument("--housekeeping-seconds", type=float, help=f"interval of expiry sweeps, default 60 {env('HOUSEKEEPING_SECONDS')}")
    p.add_argument("--public-url", help=f"base URL used in callback links, default http://HOST:PORT {env('PUBLIC_URL')}")
    p.add_argument(
        "--callback-secret", help=f"HMAC-SHA256 key to sign callback bodies {env('CALLBACK_SECRET')}"
    )


def _settings(args: argparse.Namespace) -> Settings:
    # Every flag's dest is its Settings field name; flags not given are None.
    return Settings.from_env(**{f.name: getattr(args, f.name, None) for f in fields(Settings)})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: Settings) -> int:
    import uvicorn

    from whisper_mcp.server.app import create_app

    configure_logging(settings.log_level, settings.log_format)
    # The inference thread runs Python between torch calls and so holds the GIL
    # much of the time; a waiting thread gets it after this interval. 1 ms
    # instead of 5 ms keeps request latency low during inference (/health p99
    # 14 ms instead of 18 ms in bench/ responsiveness); with no requests
    # waiting it changes nothing.
    sys.setswitchinterval(0.001)
    if not _is_loopback(settings.host) and settings.resolved_token() is None:
        banner = "!" * 78
        logging.getLogger("whisper_mcp").warning(
            "\n%s\nListening on %s WITHOUT A TOKEN: anyone who can reach this port can use the "
            "service.\nSet WHISPER_MCP_TOKEN (or --token / --token-file).\n%s",
            banner,
            settings.host,
            banner,
        )
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. an engine and compute type that don't go together
        raise SystemExit(f"whisper-mcp: error: {exc}") from None
    # log_config=None: uvicorn's loggers use our handler and format too.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False, log_config=None)
    return 0


def prepare_model(settings: Settings) -> int:
    from whisper_mcp.engines.engine import WhisperEngine
    from whisper_mcp.models.registry import ModelRegistry

    registry = ModelRegistry(settings.model_cache)
    engine = WhisperEngine(registry, "cpu", engine=settings.engine)
    info = registry.resolve(settings.model, trusted=True)
    engine.load(info)
    print(f"model {info.name} ({info.source}, {settings.engine}) is ready in {settings.model_cache}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whisper-mcp", description="Whisper speech-to-text service")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    prep = sub.add_parser("prepare-model", help="convert/download a model into the cache ahead of time")
    prep.add_argument("--model", help="default tiny.en")
    prep.add_argument("--model-cache")
    prep.add_argument("--engine", choices=["openai", "ctranslate2"], help="prepare the weights this engine uses")
    add_client_commands(sub)
    # The bridge parses its own arguments: importing it (and fastmcp) here
    # would cost every client command about 1.5 s.
    sub.add_parser("bridge", help="a local MCP server over stdio for files on this disk", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bridge":
        from whisper_mcp.client.bridge import main as bridge_main

        return bridge_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # Clients of a running service: no settings, no torch import.
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    try:
        settings = _settings(args)
    except Exception as exc:
        parser.error(str(exc))
    if args.command == "serve":
        return serve(settings)
    return prepare_model(settings)


if __name__ == "__main__":
    sys.exit(main())
