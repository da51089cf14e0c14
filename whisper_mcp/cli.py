"""Command line: ``whisper-mcp serve`` runs the service; ``whisper-mcp prepare-model``
converts/caches a model ahead of time (used by ``make``)."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import fields

from whisper_mcp.compat.httpx import skip_cli

skip_cli()  # before the client (and later the server) imports httpx: no command-line tool of its own

from whisper_mcp.client.cli import CLIENT_COMMANDS, add_client_commands, run_client_command  # noqa: E402
from whisper_mcp.config import ENGINES, ENV_PREFIX, ConfigError, Settings  # noqa: E402
from whisper_mcp.heap import tune_heap  # noqa: E402
from whisper_mcp.logs import configure as configure_logging  # noqa: E402


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    """One flag per ``Settings`` field, its help, choices and default taken from there."""
    p = sub.add_parser("serve", help="run the service (MCP at /mcp, REST routes beside it)")
    for f in fields(Settings):
        meta = f.metadata
        env = f"{ENV_PREFIX}{f.name.upper()}"
        if "flag" in meta and meta.get("value_optional"):  # --flag alone, or --flag true|false
            p.add_argument(
                meta["flag"], dest=f.name, nargs="?", const=str(meta["const"]).lower(), metavar="true|false",
                help=f"{meta['help']} (env {env})",
            )  # fmt: skip
            continue
        if "flag" in meta:  # a switch that sets the field to ``const``
            p.add_argument(
                meta["flag"], dest=f.name, action="store_const", const=meta["const"],
                help=f"{meta['help']} ({env}={str(meta['const']).lower()})",
            )  # fmt: skip
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        default_text = f", default {shown}" if shown not in (None, "", ()) and "(default" not in meta["help"] else ""
        p.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, choices=meta.get("choices"), metavar=None,
            help=f"{meta['help']}{default_text} (env {env})",
        )  # fmt: skip


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


def passive_openmp(environ: MutableMapping[str, str]) -> None:
    """Let idle OpenMP threads sleep rather than spin, unless the operator chose.

    torch and CTranslate2 (both on libgomp) keep their threads spinning at
    every barrier by default. With another busy process on the host, a
    spinning thread holds the core its sibling needs to reach the barrier:
    measured on 2 cores beside one busy process per core, a transcription took
    10x its quiet time with spinning threads and ~2x (fair share) with
    passive ones, at the same quiet-machine speed (bench/ section contention).
    It must be set before either library is imported: libgomp reads it once.
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def serve(settings: Settings) -> int:
    passive_openmp(os.environ)
    tune_heap(os.environ)  # before the threads and their arenas (heap)
    from whisper_mcp.queue.migrations import DatabaseRefused
    from whisper_mcp.queue.opening import open_database

    configure_logging(settings.log_level, settings.log_format)
    try:
        # The database first: one that cannot be used is refused in words at
        # once, before a second goes into importing the web and MCP stacks.
        database = open_database(settings)
    except DatabaseRefused as exc:  # damaged, unreachable, read-only, newer than this code: it says which
        raise SystemExit(f"whisper-mcp: error: {exc}") from None
    import uvicorn

    from whisper_mcp.compat import IncompatibleLibrary
    from whisper_mcp.server.app import create_app
    from whisper_mcp.server.connections import uvicorn_options
    from whisper_mcp.server.http.security import allowed_hosts

    # The inference thread runs Python between torch calls and so holds the GIL
    # much of the time; a waiting thread gets it after this interval. 1 ms
    # instead of 5 ms keeps request latency low during inference (/health p99
    # 14 ms instead of 18 ms in bench/ responsiveness); with no requests
    # waiting it changes nothing.
    sys.setswitchinterval(0.001)
    if not _is_loopback(settings.host) and not settings.token:
        banner = "!" * 78
        logging.getLogger("whisper_mcp").warning(
            "\n%s\nListening on %s WITHOUT A TOKEN: anyone who can reach this port can use the "
            "service.\nSet WHISPER_MCP_TOKEN (or --token / --token-file).\n%s",
            banner,
            settings.host,
            banner,
        )
    hosts = allowed_hosts(settings.host, settings.public_url, settings.allowed_hosts)
    if not _is_loopback(settings.host) and not settings.allowed_hosts and hosts is not None:
        # Users of a server on 0.0.0.0 reach it by names it cannot know.
        logging.getLogger("whisper_mcp").warning(
            "Listening on %s: requests are answered only when addressed to %s (any port); other host "
            "names get 421. Add the names clients use with --allowed-hosts (WHISPER_MCP_ALLOWED_HOSTS).",
            settings.host,
            ", ".join(sorted(hosts)),
        )
    try:
        app = create_app(settings, database=database)
        options = uvicorn_options(settings)
    except (
        ValueError,
        IncompatibleLibrary,  # an installed library lacks a name whisper-mcp's hooks need
    ) as exc:  # e.g. an engine and compute type that don't go together
        raise SystemExit(f"whisper-mcp: error: {exc}") from None
    # log_config=None: uvicorn's loggers use our handler and format too.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        **options,
    )
    return 0


def prepare_model(settings: Settings) -> int:
    from whisper_mcp.compat import IncompatibleLibrary
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.options import english_only
    from whisper_mcp.transcriber import Transcriber

    registry = ModelRegistry(settings.model_cache, engine=settings.engine)
    try:
        engine = Transcriber(registry, "cpu", engine=settings.engine)
    except IncompatibleLibrary as exc:
        raise SystemExit(f"whisper-mcp: error: {exc}") from None
    info = registry.resolve(settings.model, trusted=True)
    engine.load(info)
    print(f"model {info.name} ({info.source}, {settings.engine}) is ready in {settings.model_cache}")
    if settings.language_routing and settings.multilingual_model and english_only(info.name):
        # What the first job loads to identify its language: its copies built
        # now (base's int8 conversion peaks near 600 MiB), not during that job.
        routing = registry.resolve(settings.multilingual_model, trusted=True)
        engine.pool.get(routing)
        print(f"model {routing.name} is ready to identify languages (language routing)")
    return 0


def migrate(settings: Settings) -> int:
    """Apply the schema migrations explicitly, e.g. before rolling out replicas."""
    from whisper_mcp.queue.migrations import SCHEMA_VERSION, DatabaseRefused
    from whisper_mcp.queue.opening import database_path, open_database

    try:
        open_database(settings).close()
    except DatabaseRefused as exc:
        raise SystemExit(f"whisper-mcp: error: {exc}") from None
    where = settings.database_url.split("@", 1)[-1] if settings.database_url else database_path(settings)
    print(f"the job database {where} is at schema version {SCHEMA_VERSION}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whisper-mcp", description="Whisper speech-to-text service")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    prep = sub.add_parser("prepare-model", help="convert/download a model into the cache ahead of time")
    prep.add_argument("--model", help="default tiny.en")
    prep.add_argument("--model-cache")
    prep.add_argument("--engine", choices=ENGINES, help="prepare the weights this engine uses")
    mig = sub.add_parser(
        "migrate",
        help="bring the job database to this release's schema and exit (serve does this too, at start-up)",
    )
    mig.add_argument("--storage", help=f"the storage folder whose SQLite database to migrate (env {ENV_PREFIX}STORAGE)")
    mig.add_argument("--database-url", help=f"or the PostgreSQL database (env {ENV_PREFIX}DATABASE_URL)")
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
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings)
    return prepare_model(settings)


if __name__ == "__main__":
    sys.exit(main())
