"""The database's circuit breaker (queue/breaker.py) on a fake probe and a
fake clock: when it probes, when it trips and resets, what calls and
listeners see, and that an outage is logged twice whatever happens during it."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from whisper_mcp.errors import DatabaseUnavailable, storage_fault
from whisper_mcp.queue.breaker import Breaker


class FakeDatabase:
    """A probe target that is up or away, and counts the probes."""

    def __init__(self) -> None:
        self.away = False
        self.probes = 0
        self.now = 100.0
        self.events: list[str] = []

    def probe(self) -> None:
        self.probes += 1
        if self.away:
            raise ConnectionRefusedError("connection refused")

    def breaker(self) -> Breaker:
        breaker = Breaker(
            "db.example:5432/jobs",
            self.probe,
            on_down=lambda: self.events.append("dropped connections"),
            on_up=lambda: self.events.append(f"fresh pool, calls let through: {breaker.up}"),
            clock=lambda: self.now,
        )
        breaker.on_change(lambda up: self.events.append(f"up={up}"))
        return breaker


def test_up_it_probes_only_when_a_call_failed_or_stalled() -> None:
    db = FakeDatabase()
    breaker = db.breaker()
    breaker.step()
    assert db.probes == 0
    breaker.suspect()
    breaker.step()
    breaker.step(stalled=True)
    assert db.probes == 2 and breaker.up and db.events == []  # the database answered: no outage


def test_an_outage_refuses_calls_at_once_and_is_logged_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "whisper_mcp.queue.breaker")
    db = FakeDatabase()
    breaker = db.breaker()
    breaker.check()

    db.away = True
    breaker.suspect()
    breaker.step()
    assert not breaker.up
    with pytest.raises(DatabaseUnavailable) as refused:
        breaker.check()
    assert refused.value.status_code == 503 and "Try again" in refused.value.message
    assert storage_fault(refused.value) is refused.value  # the worker waits it out like any passing fault
    for _ in range(5):  # probed every step while down, however long
        db.now += 0.5
        breaker.step()
    assert db.probes == 6 and not breaker.up

    db.away = False
    db.now += 0.5
    breaker.step()
    assert breaker.up
    breaker.check()
    # Connections dropped once as it started; a fresh pool before calls are let through.
    assert db.events == ["dropped connections", "up=False", "fresh pool, calls let through: False", "up=True"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
    assert "db.example:5432/jobs" in lines[0] and "connection refused" in lines[0] and "503" in lines[0]
    assert "reachable again, after 3.0 s" in lines[1]


def test_a_listener_that_fails_stops_neither_the_others_nor_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    db = FakeDatabase()
    breaker = db.breaker()
    heard: list[bool] = []

    def broken(up: bool) -> None:
        raise RuntimeError("a bug")

    breaker.on_change(broken)
    breaker.on_change(heard.append)
    db.away = True
    breaker.suspect()
    breaker.step()
    db.away = False
    breaker.step()
    assert heard == [False, True] and breaker.up
    assert any("listener" in r.getMessage() for r in caplog.records)


def test_waiters_wake_when_it_is_back() -> None:
    db = FakeDatabase()
    breaker = db.breaker()
    db.away = True
    breaker.suspect()
    breaker.step()
    assert not breaker.wait_up(0.01)
    db.away = False
    threading.Timer(0.05, breaker.step).start()
    assert breaker.wait_up(5)


def test_connections_the_server_ended_while_idle_are_replaced_without_an_error(postgres_url: str) -> None:
    """What a quick restart leaves in the pool: connections whose backends
    are gone. The next calls get fresh ones, and no outage is declared."""
    import psycopg

    from whisper_mcp.queue.postgres import PostgresDatabase

    db = PostgresDatabase(postgres_url, pool_size=4)
    try:
        with db.transaction() as run:  # several connections in the pool
            run("SELECT 1", ())
            db.run("SELECT 1")
        name = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
            assert ended is not None and ended[0] >= 2
            # pg_terminate_backend only signals: wait until the backends are
            # gone, so the pool's connections are ended while idle, not mid-call.
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "the ended backends did not go away"
                time.sleep(0.02)
        for _ in range(4):
            assert db.run("SELECT 1")[0] == [(1,)]
        assert db.breaker.up
    finally:
        db.close()
