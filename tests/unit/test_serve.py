"""``whisper-mcp serve`` up to the point where uvicorn would run: the flags the
end-to-end tests used to pass to a real server reach the settings, the app,
logging and the engine; a server reachable from other hosts without a token
warns. No torch, no model, no process."""

from __future__ import annotations

import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from whisper_mcp import cli
from whisper_mcp.config import Settings
from whisper_mcp.queue.opening import database_path
from whisper_mcp.server import app as app_module


class Served:
    """What ``serve`` handed on, instead of building the app and running uvicorn."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings: Settings | None = None
        self.logging: tuple[str, str] | None = None
        self.uvicorn: dict[str, Any] = {}
        monkeypatch.setattr(app_module, "create_app", self._create_app)
        monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: setattr(self, "logging", (level, fmt)))
        monkeypatch.setattr(sys, "setswitchinterval", lambda interval: None)
        import uvicorn

        monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: self.uvicorn.update(app=app, **kwargs))

    def _create_app(self, settings: Settings, database: object = None) -> str:
        self.settings = settings
        return "the app"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    for name in [n for n in __import__("os").environ if n.startswith("WHISPER_MCP_")]:
        monkeypatch.delenv(name)
    return Served(monkeypatch)


def test_flags_reach_the_app_and_uvicorn(served: Served, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    argv = [
        "serve", "--host", "127.0.0.1", "--port", "8123", "--storage", str(tmp_path / "storage"),
        "--token-file", str(token_file), "--max-upload-mb", "4", "--max-audio-seconds", "120",
        "--upload-ttl-seconds", "3", "--housekeeping-seconds", "0.5",
        "--allowed-origins", "https://dashboard.example,https://other.example",
        "--min-free-mb", "1073741824", "--retention-days", "0.00003", "--model-memory-mb", "500",
        "--log-format", "json", "--log-level", "warning", "--keep-audio",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    s = served.settings
    assert s is not None
    assert (s.host, s.port, s.storage) == ("127.0.0.1", 8123, tmp_path / "storage")
    assert s.token == "s3cret" and s.max_upload_mb == 4 and s.max_audio_seconds == 120.0
    assert s.upload_ttl_seconds == 3.0 and s.housekeeping_seconds == 0.5
    assert s.allowed_origins == ("https://dashboard.example", "https://other.example")
    assert s.min_free_mb == 2**30 and s.retention_days == 0.00003 and s.model_memory_mb == 500
    assert s.delete_audio is False
    assert served.logging == ("warning", "json")
    assert served.uvicorn is not None
    protocol = served.uvicorn.pop("http")
    assert (protocol.max_connections, protocol.header_timeout, protocol.body_timeout) == (1000, 10.0, 60.0)
    assert served.uvicorn.pop("timeout_keep_alive") == 5.0
    assert served.uvicorn.pop("h11_max_incomplete_event_size") == 16 * 1024
    assert served.uvicorn.pop("ws_max_size") == 21 * 1024 * 1024  # a live append's 15 MiB, as base64
    assert served.uvicorn == {
        "app": "the app", "host": "127.0.0.1", "port": 8123, "log_level": "warning", "access_log": False, "log_config": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "warns"),
    [
        (["--host", "0.0.0.0"], True),
        (["--host", "192.168.1.5"], True),
        (["--host", "0.0.0.0", "--token", "t"], False),
        (["--host", "127.0.0.1"], False),
        (["--host", "localhost"], False),
        (["--host", "::1"], False),
    ],
)
def test_non_loopback_without_token_warns(
    served: Served, caplog: pytest.LogCaptureFixture, tmp_path: Path, flags: list[str], warns: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="whisper_mcp"):
        assert cli.main(["serve", "--storage", str(tmp_path / "storage"), *flags]) == 0
    warned = [r.getMessage() for r in caplog.records if "WITHOUT A TOKEN" in r.getMessage()]
    assert bool(warned) is warns, caplog.text
    if warns:
        assert flags[1] in warned[0] and "WHISPER_MCP_TOKEN" in warned[0]


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_serve_makes_openmp_threads_sleep_unless_told_otherwise(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: str | None, expected: str
) -> None:
    """Spinning OpenMP threads collapse beside a busy process; libgomp reads the
    policy once, so serve sets it before the app (and torch or CTranslate2) loads."""
    monkeypatch.setenv("OMP_WAIT_POLICY", given or "")  # restored after the test, whatever serve sets
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY")
    seen: list[str | None] = []
    monkeypatch.setattr(
        app_module, "create_app", lambda settings, database: seen.append(os.environ.get("OMP_WAIT_POLICY")) or "the app"
    )
    assert cli.main(["serve", "--storage", str(tmp_path / "storage")]) == 0
    assert seen == [expected]


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--host", "0.0.0.0"], "127.0.0.1, ::1, host.docker.internal, localhost"),
        (["--host", "192.168.1.5", "--public-url", "https://w.example/"], "127.0.0.1, 192.168.1.5, ::1, host.docker.internal, localhost, w.example"),
        (["--host", "0.0.0.0", "--allowed-hosts", "w.lan"], None),
        (["--host", "127.0.0.1"], None),
    ],
)  # fmt: skip
def test_a_wildcard_bind_says_which_host_names_it_answers(
    served: Served, caplog: pytest.LogCaptureFixture, tmp_path: Path, flags: list[str], names: str | None
) -> None:
    with caplog.at_level(logging.WARNING, logger="whisper_mcp"):
        assert cli.main(["serve", "--storage", str(tmp_path / "storage"), *flags]) == 0
    warned = [r.getMessage() for r in caplog.records if "get 421" in r.getMessage()]
    assert bool(warned) is (names is not None), caplog.text
    if names is not None:
        assert f"addressed to {names} (any port)" in warned[0] and "--allowed-hosts" in warned[0]


def test_the_engine_is_built_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--model-memory-mb and its neighbours reach the real engine's constructor
    (stand-ins for the torch modules record what they were given)."""
    made: dict[str, Any] = {}

    class Registry:
        def __init__(self, cache: Path, engine: str) -> None:
            made["registry"] = (cache, engine)

        def resolve(self, name: str, trusted: bool = False) -> types.SimpleNamespace:
            made["resolved"] = (name, trusted)
            return types.SimpleNamespace(name=name)

    class Engine:
        def __init__(self, registry: Registry, device: str, threads: int, **kwargs: Any) -> None:
            made["engine"] = (device, threads, kwargs)

    monkeypatch.setitem(sys.modules, "whisper_mcp.models.registry", types.SimpleNamespace(ModelRegistry=Registry))
    monkeypatch.setitem(sys.modules, "whisper_mcp.transcriber", types.SimpleNamespace(Transcriber=Engine))
    settings = Settings.from_env(
        {},
        model_cache=str(tmp_path / "cache"),
        model="base",
        device="cpu",
        threads="3",
        engine="openai",
        model_memory_mb="500",
        model_idle_seconds="60",
        batch_size="4",
    )
    app_module.build_engine(settings)
    assert made["registry"] == (tmp_path / "cache", "openai")
    assert made["resolved"] == ("base", True)  # the operator's model: any path allowed
    device, threads, kwargs = made["engine"]
    assert (device, threads) == ("cpu", 3)
    assert kwargs == {
        "pinned": "base",
        "idle_seconds": 60.0,
        "memory_budget_bytes": 500 * 2**20,
        "engine": "openai",
        "compute_type": "default",
        "encoder_compute_type": "default",
        "decoder_threads": -1,  # auto
        "default_beam_size": 0,
        "batch_size": 4,
        "vad_batching": False,
        "fit_windows": True,
    }


@pytest.mark.parametrize(
    ("flags", "used"),
    [
        ([], False),  # windows in order, with temperature fallback
        (["--vad-batching"], True),  # the switch as it always was
        (["--vad-batching", "true"], True),
        (["--vad-batching", "false"], False),
    ],
)
def test_vad_batching_takes_a_switch_or_a_value(served: Served, tmp_path: Path, flags: list[str], used: bool) -> None:
    assert cli.main(["serve", "--storage", str(tmp_path / "storage"), *flags]) == 0
    assert served.settings is not None and served.settings.vad_batching is used


def test_the_database_is_where_the_file_store_keeps_it(tmp_path: Path) -> None:
    """open_database finds the SQLite file before FileStore makes the storage
    folders, so a refused database leaves the folder as it was."""
    from whisper_mcp.queue.files import FileStore

    settings = Settings.from_env({}, storage=tmp_path / "storage")
    path = database_path(settings)
    assert not (tmp_path / "storage").exists()
    assert path == FileStore(tmp_path / "storage").database
