"""The composition root: builds every collaborator from ``Settings`` and wires
them together, then serves MCP at /mcp and the HTTP routes in one Starlette app.

Nothing else constructs collaborators, so a test can hand in its own (a fake
engine, most often) and run the real routes in-process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from whisper_mcp import compat
from whisper_mcp.config import Settings
from whisper_mcp.engines.base import Engine
from whisper_mcp.queue.client_secrets import SQLClientSecretStore
from whisper_mcp.queue.manager import JobQueue
from whisper_mcp.queue.opening import open_database, open_storage
from whisper_mcp.queue.store import Database, SQLJobStore, SQLUploadStore
from whisper_mcp.server.audio_urls import AudioSources, BucketFetcher, Fetcher, HttpFetcher
from whisper_mcp.server.callbacks import CallbackSender
from whisper_mcp.server.egress import CallbackPolicy, literal_address
from whisper_mcp.server.http import dashboard, openai_api, realtime, realtime_auth, rest
from whisper_mcp.server.http.security import AccessGuard, allowed_hosts, local_origins
from whisper_mcp.server.mcp_endpoint import LazyMCP
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.realtime.protocol import SessionConfig
from whisper_mcp.server.realtime_secrets import ClientSecrets
from whisper_mcp.server.service import TranscriptionService
from whisper_mcp.server.uploads import UploadManager
from whisper_mcp.server.worker import InferenceWorker


def build_engine(settings: Settings) -> Engine:
    """The real engine (imports torch): the model registry, pool and backend."""
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.transcriber import Transcriber

    registry = ModelRegistry(settings.model_cache, engine=settings.engine)
    return Transcriber(
        registry,
        settings.device,
        settings.threads,
        pinned=registry.resolve(settings.model, trusted=True).name,
        idle_seconds=settings.model_idle_seconds,
        memory_budget_bytes=settings.model_memory_mb * 1024 * 1024,
        engine=settings.engine,
        compute_type=settings.compute_type,
        encoder_compute_type=settings.encoder_compute_type,
        decoder_threads=settings.decoder_threads,
        default_beam_size=settings.default_beam_size,
        batch_size=settings.batch_size,
        vad_batching=settings.vad_batching,
        fit_windows=settings.fit_windows,
    )


def callback_policy(settings: Settings) -> CallbackPolicy:
    """Where callbacks may go: loopback too while the server itself listens
    only on loopback (a local set-up, whose receivers are local)."""
    address = literal_address(settings.host)
    loopback = settings.host.lower() == "localhost" or (address is not None and address.is_loopback)
    return CallbackPolicy(settings.callback_allow, allow_loopback=loopback)


def audio_sources(settings: Settings, queue: JobQueue, policy: CallbackPolicy) -> AudioSources:
    """Where jobs sent as a URL fetch their audio, by scheme: http(s) through
    the callbacks' egress policy, within the upload limit. (An object store's
    fetcher reads s3:// when the server has one.)"""
    web = HttpFetcher(policy, max_bytes=settings.max_upload_bytes)
    fetchers: dict[str, Fetcher] = {"https": web, "http": web}
    if settings.storage_url:  # s3:// with the object store's credentials
        fetchers["s3"] = BucketFetcher(settings.storage_endpoint, settings.storage_region)
    return AudioSources(
        fetchers,
        queue,
        max_bytes=settings.max_upload_bytes,
        min_free_bytes=settings.min_free_bytes,
        max_audio_seconds=settings.max_audio_seconds,
    )


def build_service(
    settings: Settings, engine: Engine | None = None, database: Database | None = None
) -> TranscriptionService:
    """The service and its collaborators; ``database`` if already opened
    (``serve`` opens it first, see ``whisper_mcp.cli``)."""
    # The hooks into the libraries every server uses (the engine's own are
    # checked as its backend is built): IncompatibleLibrary if one is gone
    # that has no public path.
    compat.verify()
    # The queue first: a database this code cannot open stops start-up before
    # seconds go into importing torch and loading a model, and before the
    # storage folders are made.
    database = database if database is not None else open_database(settings)
    files = open_storage(settings)
    queue = JobQueue(
        SQLJobStore(database),
        files,
        replica_id=settings.replica_id or f"{socket.gethostname()}-{os.getpid()}",
        lease_seconds=settings.lease_seconds,
        delete_audio=settings.delete_audio,
        min_free_bytes=settings.min_free_bytes,
    )
    engine = engine if engine is not None else build_engine(settings)
    metrics = Metrics()
    default_model = engine.registry.resolve(settings.model, trusted=True).name
    policy = callback_policy(settings)
    sources = audio_sources(settings, queue, policy)
    worker = InferenceWorker(
        queue,
        engine,
        default_model,
        metrics=metrics,
        batch_size=settings.batch_size,
        nice=settings.inference_nice,
        heartbeat_seconds=settings.heartbeat_seconds,
        sources=sources,
    )
    uploads = UploadManager(
        SQLUploadStore(database),
        files,
        max_bytes=settings.max_upload_bytes,
        min_free_bytes=settings.min_free_bytes,
        ttl=settings.upload_ttl_seconds,
    )
    callbacks = CallbackSender(
        queue,
        public_url=settings.public_url or f"http://{settings.host}:{settings.port}",
        secret=settings.callback_secret,
        backoff=settings.callback_retry_delays,
        policy=policy,
        concurrency=settings.callback_concurrency,
    )
    # httpx logs each request's full URL at INFO: a callback URL's credentials with it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return TranscriptionService(
        settings,
        queue=queue,
        engine=engine,
        worker=worker,
        uploads=uploads,
        callbacks=callbacks,
        metrics=metrics,
        client_secrets=ClientSecrets(SQLClientSecretStore(database)),
        sources=sources,
    )


def _exception_handlers(settings: Settings) -> dict[type[Exception], object]:
    handlers: dict[type[Exception], object] = dict(rest.exception_handlers)
    if settings.database_url:  # PostgreSQL away or full: 503/507, as for SQLite
        import psycopg

        handlers[psycopg.Error] = rest.storage_error
    return handlers


def live_session_check(service: TranscriptionService) -> Callable[[SessionConfig], object]:
    """What a client secret's session must pass: what the socket asks of a session."""
    return lambda c: service.live.request(c.model, c.language, c.prompt, " ".join(c.keywords) or None, c.logprobs)


def mcp_app(service: TranscriptionService) -> Starlette:
    """FastMCP's app for /mcp (imports fastmcp: ``LazyMCP`` calls it on the
    first MCP request). Stateless: no MCP session lives in one process, so any
    replica answers any request behind a load balancer; progress
    notifications still flow on the request's own stream."""
    from whisper_mcp.server.mcp import build_mcp

    return build_mcp(service).http_app(path="/mcp", stateless_http=True)


def create_app(
    settings: Settings, service: TranscriptionService | None = None, database: Database | None = None
) -> Starlette:
    service = service if service is not None else build_service(settings, database=database)
    mcp = LazyMCP(lambda: mcp_app(service))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            async with mcp.running():
                yield
        finally:
            await service.stop()

    app = Starlette(
        # The MCP app as the endpoint of /mcp alone, so every other path gets
        # our JSON errors rather than its plain-text 404.
        routes=[
            *rest.routes(service),
            # Before the /v1 mount, which answers every other /v1 path.
            *realtime_auth.routes(service.client_secrets, check=live_session_check(service)),
            *realtime.routes(service),
            *openai_api.routes(service),
            *dashboard.routes(),
            Route("/mcp", endpoint=mcp),
        ],
        exception_handlers=_exception_handlers(settings),  # type: ignore[arg-type]
        lifespan=lifespan,
        middleware=[
            Middleware(
                AccessGuard,
                token=settings.token or None,
                allowed_origins=local_origins(settings.port) | set(settings.allowed_origins),
                allowed_hosts=allowed_hosts(settings.host, settings.public_url, settings.allowed_hosts),
                client_secrets=service.client_secrets,
            )
        ],
    )
    app.state.service = service
    return app
