"""The inference worker under faults: silent windows, graceful stops, a full
disk or database. A real store, queue and worker thread over a fake engine;
the disk faults are fakes here, and a real (small tmpfs) full disk at the end."""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from whisper_mcp.compat.patching import replace_tqdm, report_windows
from whisper_mcp.engines import progress
from whisper_mcp.errors import DatabaseUnavailable
from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.jobs import JobStatus
from whisper_mcp.queue.manager import MAX_ATTEMPTS, JobCancelled, JobQueue
from whisper_mcp.queue.sqlite import SQLiteJobStore
from whisper_mcp.server import worker as worker_module
from whisper_mcp.server.metrics import Metrics
from whisper_mcp.server.worker import InferenceWorker

from fakes import FakeEngine
from helpers import FIXTURES, InProcessServer, queued, tmpfs

DISK_FULL = sqlite3.OperationalError("database or disk is full")


def until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_backoff", lambda failures: 0.01)


def start(store: SQLiteJobStore, files: FileStore, engine: FakeEngine, **kwargs: Any) -> InferenceWorker:
    queue = JobQueue(store, files, **kwargs)
    worker = InferenceWorker(queue, engine, "tiny.en", metrics=Metrics())
    worker.start()
    return worker


# -- progress on windows skipped as silence --------------------------------


def fake_library(frames: int, spoken: set[int]) -> types.ModuleType:
    """A decoder shaped like openai-whisper's transcribe loop: a bar over mel
    frames, ``pad_or_trim`` at each 30 s window, the bar updated only after
    a window that was not skipped as silence (those in ``spoken``)."""
    module = types.ModuleType("fake_whisper_transcribe")
    module.pad_or_trim = lambda array, *a: array  # type: ignore[attr-defined]

    def transcribe() -> None:
        with module.tqdm.tqdm(total=frames, unit="frames") as bar:  # type: ignore[attr-defined]
            seek, index = 0, 0
            while seek < frames:
                size = min(3000, frames - seek)
                module.pad_or_trim(types.SimpleNamespace(shape=(80, size)))  # type: ignore[attr-defined]
                previous, seek = seek, seek + size
                if index in spoken:
                    bar.update(seek - previous)
                index += 1

    module.transcribe = transcribe  # type: ignore[attr-defined]
    module.tqdm = None  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    replace_tqdm(module, progress.ProgressBar, calls_module=True)
    report_windows(module, progress.window_started)
    return module


def test_windows_skipped_as_silence_report_progress_and_see_a_cancel() -> None:
    module = fake_library(10 * 3000, spoken={7})
    reports: list[float] = []
    with progress.reporting(reports.append):
        module.transcribe()
    # One report per window start, silent ones included, then the spoken window's update.
    assert reports == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.9])

    def cancel_at(fraction: float) -> None:
        if fraction >= 0.3:
            raise JobCancelled("j")

    with pytest.raises(JobCancelled), progress.reporting(cancel_at):
        module.transcribe()
    # Outside a reporting block (or before its bar exists) the hook does nothing.
    module.transcribe()
    del sys.modules[module.__name__]


# -- graceful stop -----------------------------------------------------------


def test_a_stop_puts_the_running_job_back_without_counting_an_attempt(store: SQLiteJobStore, files: FileStore) -> None:
    """Three stops in the middle of one job, then a run to the end: it
    completes on its first counted attempt, never failing for restarts."""
    for _ in range(3):
        engine = FakeEngine(windows=4, hold_from=2)
        engine.gate.clear()
        add_once = store.get("long") is None
        if add_once:
            queued(store, files, "long", duration=120.0)
        worker = start(store, files, engine)
        until(engine.started.is_set, "the job to start")
        assert store.get("long").status is JobStatus.PROCESSING  # type: ignore[union-attr]
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        until(worker._stop.is_set, "stop to begin")
        engine.gate.set()  # the window ends; the next report sees the stop
        stopper.join(10)
        job = store.get("long")
        assert job is not None and job.status is JobStatus.QUEUED and job.attempts == 0, job
        assert files.audio_path(job.key).exists()
    worker = start(store, files, FakeEngine(windows=4))
    until(lambda: store.get("long").status is JobStatus.COMPLETED, "the job to complete")  # type: ignore[union-attr]
    worker.stop()
    assert store.get("long").attempts == 1  # type: ignore[union-attr]


def test_a_stop_ends_a_job_with_a_cancel_asked_cancelled(store: SQLiteJobStore, files: FileStore) -> None:
    engine = FakeEngine(windows=4, hold_from=2)
    engine.gate.clear()
    queued(store, files, "c")
    worker = start(store, files, engine)
    until(engine.started.is_set, "the job to start")
    assert store.request_cancel("c")  # as another replica would: the database only
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    until(lambda: worker._stop.is_set(), "stop to begin")
    engine.gate.set()
    stopper.join(10)
    assert store.get("c").status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_a_job_cancelled_while_running_is_not_run_again_after_a_crash(store: SQLiteJobStore, files: FileStore) -> None:
    """The cancel is in the database: a process that dies before acting on
    it leaves a job that recovery ends cancelled, and the queue moves on."""
    queued(store, files, "c")
    queued(store, files, "next")
    claimed = store.claim_next("dead", 30.0, time.time())
    assert claimed is not None and claimed.job_id == "c"
    assert store.request_cancel("c")
    queue = JobQueue(store, files)
    assert queue.recover() == []  # the dead process's claim: settled, not re-queued
    assert store.get("c").status is JobStatus.CANCELLED  # type: ignore[union-attr]
    worker = InferenceWorker(queue, FakeEngine(), "tiny.en", metrics=Metrics())
    worker.start()
    until(lambda: store.get("next").status is JobStatus.COMPLETED, "the next job")  # type: ignore[union-attr]
    worker.stop()
    assert store.get("c").status is JobStatus.CANCELLED  # type: ignore[union-attr]


# -- a full disk, a full database -------------------------------------------


def test_a_result_that_cannot_be_written_is_retried_and_leaves_no_temp_file(
    store: SQLiteJobStore, files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while the transcript is written: no partial file, the worker
    tries again, and the job completes once there is room."""
    real_open = open
    full = threading.Event()
    full.set()
    failures = []

    def open_on_full_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, mode, *args, **kwargs)
        if full.is_set() and str(path).endswith(".json.tmp"):
            failures.append(path)
            if len(failures) >= 6:
                full.clear()  # space freed
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr("builtins.open", open_on_full_disk)
    queued(store, files, "a")
    worker = start(store, files, FakeEngine())
    until(lambda: store.get("a").status is JobStatus.COMPLETED, "the job to complete")  # type: ignore[union-attr]
    worker.stop()
    job = store.get("a")
    assert job is not None
    assert len(failures) == 6
    assert job.attempts == 2  # four tries in place, back to the queue, then two more and done
    assert list(files.results_dir.glob("*.tmp")) == []
    assert files.read_result(job.key) is not None


def test_a_disk_that_stays_full_fails_the_job_after_the_attempts_cap(
    store: SQLiteJobStore, files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_result", no_space)
    queued(store, files, "a")
    queued(store, files, "b")
    worker = start(store, files, FakeEngine())
    until(lambda: store.get("b").status is JobStatus.FAILED, "both jobs to fail")  # type: ignore[union-attr]
    assert worker.alive
    worker.stop()
    job = store.get("a")
    assert job is not None and job.status is JobStatus.FAILED and job.attempts == MAX_ATTEMPTS
    assert job.error is not None and "disk space" in job.error and "Errno" not in job.error


def test_a_full_database_never_kills_the_worker(
    store: SQLiteJobStore, files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses every write for a while (claims, ends of runs,
    re-queueing): the thread lives through it, and every job ends once the
    database takes writes again."""
    full = threading.Event()
    refused: list[str] = []
    real_run = store.db.run

    def run(sql: str, params: Any = ()) -> Any:
        if full.is_set() and sql.lstrip().split()[0].upper() in ("UPDATE", "INSERT", "DELETE"):
            refused.append(sql)
            raise DISK_FULL
        return real_run(sql, params)

    monkeypatch.setattr(store.db, "run", run)
    engine = FakeEngine(windows=2, hold_from=2)
    engine.gate.clear()
    queued(store, files, "a")
    queued(store, files, "b")
    worker = start(store, files, engine)
    until(engine.started.is_set, "a to start")
    full.set()
    engine.gate.set()
    until(lambda: len(refused) >= 8, "a's end to be refused a few times")
    assert worker.alive
    assert store.get("a").status is JobStatus.PROCESSING  # type: ignore[union-attr]
    full.clear()
    until(lambda: store.get("b").status is JobStatus.COMPLETED, "both jobs to end")  # type: ignore[union-attr]
    assert store.get("a").status in (JobStatus.COMPLETED, JobStatus.QUEUED, JobStatus.PROCESSING)  # type: ignore[union-attr]
    until(lambda: store.get("a").status is JobStatus.COMPLETED, "a to complete")  # type: ignore[union-attr]
    # Full again while idle: claims are refused, the thread waits it out.
    full.set()
    add_refused = len(refused)
    worker.notify()
    until(lambda: worker.state().running, "")
    full.clear()
    queued(store, files, "c")
    full.set()
    worker.notify()
    until(lambda: len(refused) > add_refused + 2, "claims to be refused")
    assert worker.alive
    full.clear()
    worker.notify()
    until(lambda: store.get("c").status is JobStatus.COMPLETED, "c to complete")  # type: ignore[union-attr]
    worker.stop()


def test_an_end_committed_though_its_answer_was_lost_is_logged_once(
    store: SQLiteJobStore, files: FileStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database commits a run's end, then goes away before answering (a
    connection cut mid-commit): the worker tries the end again once it is
    back, finds it is its own, and logs the job completed, not lost."""
    cut: list[str] = []
    real_run = store.db.run

    def run(sql: str, params: Any = ()) -> Any:
        answer = real_run(sql, params)
        if not cut and sql.startswith("UPDATE jobs SET status = 'completed'"):
            cut.append(sql)
            raise DatabaseUnavailable()
        return answer

    monkeypatch.setattr(store.db, "run", run)
    caplog.set_level(logging.INFO, "whisper_mcp")
    queued(store, files, "a")
    worker = start(store, files, FakeEngine())
    until(lambda: "job a completed" in caplog.text, "the job's end to be logged")
    worker.stop()
    assert cut and store.get("a").status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert caplog.text.count("job a completed") == 1 and "another replica holds it" not in caplog.text


def test_no_job_starts_while_the_disk_is_below_the_floor(store: SQLiteJobStore, files: FileStore) -> None:
    queued(store, files, "a")
    engine = FakeEngine()
    worker = start(store, files, engine, min_free_bytes=2**62)
    until(lambda: worker.state().waiting is not None, "the worker to wait for space")
    assert store.get("a").status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert not engine.started.is_set()
    worker._queue.min_free_bytes = 0
    until(lambda: store.get("a").status is JobStatus.COMPLETED, "a to run once there is room")  # type: ignore[union-attr]
    assert worker.state().waiting is None
    worker.stop()


# -- what clients see ---------------------------------------------------------


def test_health_and_livez_report_a_worker_thread_that_is_gone(tmp_path: Path) -> None:
    with InProcessServer.start(tmp_path / "storage") as server, server.client() as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/health").json()["worker"] == "running"
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        server.service.worker._thread = dead  # as if it had died
        assert client.get("/livez").status_code == 503
        health = client.get("/health").json()
        assert health["status"] == "error" and health["worker"] == "stopped", health


def test_health_is_degraded_while_a_jobs_end_cannot_be_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses writes as a job ends: /health says degraded, and
    why, for as long as the end is not recorded; ok again once it is."""
    engine = FakeEngine(windows=2, hold_from=2)
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as client:
        db = server.service.queue._store.db
        full = threading.Event()
        real_run = db.run

        def run(sql: str, params: Any = ()) -> Any:
            if full.is_set() and sql.lstrip().split()[0].upper() in ("UPDATE", "INSERT", "DELETE"):
                raise DISK_FULL
            return real_run(sql, params)

        monkeypatch.setattr(db, "run", run)
        with open(FIXTURES / "short.wav", "rb") as f:
            job_id = client.post("/transcribe", files={"file": f}).json()["job_id"]
        until(engine.started.is_set, "the job to start")
        health = client.get("/health").json()
        assert (health["status"], health["worker"]) == ("ok", "running"), health
        full.set()
        engine.gate.set()
        until(lambda: client.get("/health").json()["status"] == "degraded", "/health to say degraded")
        for _ in range(3):  # for as long as the end is not recorded, not one moment
            health = client.get("/health").json()
            assert health["status"] == "degraded", health
            assert health["worker"] == "waiting to record a job's end: the disk is full", health
            assert client.get("/livez").status_code == 200  # alive: nothing to restart
            time.sleep(0.05)
        full.clear()
        until(lambda: client.get(f"/status/{job_id}").json()["status"] == "completed", "the job to complete")
        until(lambda: client.get("/health").json()["status"] == "ok", "/health to say ok again")
        assert client.get("/health").json()["worker"] == "running"


@pytest.mark.anyio
async def test_routes_and_tools_answer_507_or_503_on_database_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with InProcessServer.start(tmp_path / "storage") as server:
        store = server.service.queue._store
        with server.client() as client:
            with open(FIXTURES / "short.wav", "rb") as f:
                job_id = client.post("/transcribe", files={"file": f}).json()["job_id"]
            for method in ("get", "cancel_queued", "request_cancel", "list"):
                monkeypatch.setattr(store, method, _raises(DISK_FULL))
            monkeypatch.setattr(server.service.uploads._store, "create", _raises(DISK_FULL))
            cancel = client.delete(f"/jobs/{job_id}")
            assert cancel.status_code == 507, cancel.text
            assert cancel.json()["error"]["code"] == "insufficient_storage"
            assert client.get("/jobs").status_code == 507
            monkeypatch.setattr(store, "get", _raises(sqlite3.OperationalError("database is locked")))
            away = client.get(f"/status/{job_id}")
            assert away.status_code == 503 and "database" in away.json()["error"]["message"], away.text
            monkeypatch.setattr(store, "get", _raises(OSError(errno.ENOSPC, "No space left on device")))
            assert client.get(f"/status/{job_id}").status_code == 507
        async with Client(f"{server.url}/mcp") as mcp:
            monkeypatch.setattr(store, "get", lambda job_id: None)
            with pytest.raises(ToolError) as raised:
                await mcp.call_tool("create_upload_url", {"filename": "a.wav"})
            assert "disk is full" in str(raised.value) and "database or disk" not in str(raised.value)


def _raises(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


# -- a real full disk ---------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted (and so freed) afterwards."""
    with tmpfs(tmp_path / "disk", 16) as mount:
        yield mount


@pytest.mark.slow  # runs mount
def test_a_real_full_disk_under_a_running_job(small_disk: Path) -> None:
    """The disk fills while a job runs: its transcript cannot be saved, the
    worker lives, routes answer 507 not 500, /health says why; once space
    is freed the job completes and nothing half-written is left."""
    engine = FakeEngine(windows=2, hold_from=2)
    engine.gate.clear()
    storage = small_disk / "storage"
    with InProcessServer.start(storage, engine, min_free_mb=0) as server, server.client() as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            job_id = client.post("/transcribe", files={"file": f}).json()["job_id"]
        until(engine.started.is_set, "the job to start")
        filler = small_disk / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        engine.gate.set()
        until(lambda: "could not record" in "".join(_log_lines), "the save to fail", timeout=20)
        assert server.service.worker.alive
        health = client.get("/health").json()
        assert health["status"] == "degraded", health
        assert health["worker"] == "waiting to record a job's end: the disk is full", health
        for _ in range(3):  # the database may still find room in its pages; a new job cannot
            with open(FIXTURES / "short.wav", "rb") as f:
                upload = client.post("/transcribe", files={"file": f})
            assert upload.status_code in (507, 503), upload.text
        cancel = client.delete(f"/jobs/{job_id}-unknown")
        assert cancel.status_code in (404, 507, 503), cancel.text
        assert client.get("/livez").status_code == 200
        filler.unlink()  # space freed
        deadline = time.monotonic() + 60
        while (record := client.get(f"/status/{job_id}").json())["status"] != "completed":
            assert record["status"] in ("processing", "queued"), record
            assert time.monotonic() < deadline, record
            time.sleep(0.05)
        assert list((storage / "results").glob("*.tmp")) == []
        assert client.get(f"/download/{job_id}").status_code == 200
        assert client.get("/health").json()["status"] == "ok"


_log_lines: list[str] = []


class _Sink(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _log_lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def worker_log() -> Iterator[None]:
    handler = _Sink()
    logger = logging.getLogger("whisper_mcp.server.worker")
    logger.addHandler(handler)
    _log_lines.clear()
    try:
        yield
    finally:
        logger.removeHandler(handler)


def test_a_database_damaged_while_running_answers_in_words() -> None:
    """A route that meets SQLite's "malformed" answers 503 in words, not a plain 500."""
    import sqlite3

    from whisper_mcp.errors import storage_fault

    fault = storage_fault(sqlite3.DatabaseError("database disk image is malformed"))
    assert fault is not None and fault.status_code == 503 and "damaged" in fault.message
    assert storage_fault(sqlite3.DatabaseError("something else")) is None  # a bug stays a 500
