"""Fixtures: a real whisper-mcp server process (the real model) and an
in-process one over a fake engine, each on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from whisper_mcp.testing import PostgresCluster

from helpers import ROOT, InProcessServer, ServerProcess

# Tools' own caches; anything else a run leaves in the checkout is a test (or
# the code under test) writing where a user's working directory would be.
_CACHES = {".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__"}
_before = pytest.StashKey[set[str]]()


def _checkout() -> set[str]:
    return {p.name for p in ROOT.iterdir()} - _CACHES


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the xdist controller, or a plain run
        session.config.stash[_before] = _checkout()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_before, None)
    if before is None:
        return
    left = sorted(_checkout() - before)
    if left:
        print(f"\nthe test run left {left} in the checkout {ROOT}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server")
    srv = ServerProcess(root / "storage", root / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def fake_server(tmp_path) -> Iterator[InProcessServer]:
    """The app over a fake engine, fresh storage per test."""
    with InProcessServer.start(tmp_path / "storage") as srv:
        yield srv


@pytest.fixture
def fake_client(fake_server: InProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server for the session (started as the postgres user)."""
    if PostgresCluster.binaries() is None:
        pytest.skip("PostgreSQL is not installed; `make test` installs Debian's postgresql package")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres.database()
