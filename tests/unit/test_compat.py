"""The borrowed hooks (whisper_mcp.compat): one test per library that the
installed, pinned version passes its check, and that a name gone (deleted
from the real library for the test) gives the fatal start-up message or the
public path, listed for /health; then start-up and /health themselves."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from whisper_mcp import compat
from whisper_mcp.compat import IncompatibleLibrary
from whisper_mcp.compat import faster_whisper as fw_hooks
from whisper_mcp.compat import fastmcp as fastmcp_hooks
from whisper_mcp.compat import openai_whisper as ow_hooks
from whisper_mcp.compat import senko as senko_hooks
from whisper_mcp.compat import uvicorn as uvicorn_hooks
from whisper_mcp.compat.hooks import Check, Hook, Library, Lost, report

from fakes import FakeEngine
from helpers import InProcessServer


def passes(library: Library) -> None:
    check = library.examine()
    assert check.found == library.written_for  # the pinned version is installed
    assert check.lost == (), [check.message(lost) for lost in check.lost]


def test_the_name_checks_see_names_parameters_and_code() -> None:
    module = types.ModuleType("compat_stand_in")

    class Thing:
        def __init__(self) -> None:
            self.inner = 1

        def method(self, a: int, b: int) -> int:
            local = a + b
            return local

    module.Thing = Thing  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        hook = Hook("h", "it", ("compat_stand_in:Thing.method(self, a, b)", "compat_stand_in:Thing[inner]"), "less")
        names = [
            "compat_stand_in:Thing.method(self, a, c)",  # parameters changed
            "compat_stand_in:Thing[other]",  # no such attribute set by __init__
            "compat_stand_in:Thing.method[gone]",  # no such local
            "compat_stand_in:Thing.missing",
            "compat_stand_in_gone:Thing",  # no such module
        ]
        check = Library("stand-in", "1.0", (hook, Hook("g", "more", tuple(names), "less"))).examine(found="1.0")
        assert check.has("h") and not check.has("g")
        assert check.lost[0].missing == tuple(names)
        assert check.health()[0]["missing"][:2] == [
            "compat_stand_in.Thing.method(self, a, c)",
            "other in compat_stand_in.Thing",
        ]
    finally:
        del sys.modules[module.__name__]


# -- faster-whisper: every hook has a public path ------------------------------


def test_faster_whisper(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    passes(fw_hooks.LIBRARY)
    transcribe = importlib.import_module(fw_hooks.MODULE)
    monkeypatch.delattr(transcribe.BatchedInferencePipeline, "_batched_segments_generator")
    check = fw_hooks.LIBRARY.examine(found="1.3.0")
    assert [lost.hook.name for lost in check.lost] == ["_batched_segments_generator"] and not check.fatal
    check.raise_if_fatal()  # starts
    with caplog.at_level(logging.WARNING):
        check.log(logging.getLogger("test"))
    assert (
        "faster-whisper 1.3.0 is installed, but whisper-mcp's hook `_batched_segments_generator` "
        "(the first VAD-batched text after one chunk: smaller first batches) was written for 1.2.1 and "
        "`faster_whisper.transcribe.BatchedInferencePipeline._batched_segments_generator(self, features, "
        "tokenizer, chunks_metadata, batch_size, options, log_progress)` is gone or changed; instead: faster-whisper's "
        "own batches: the first text after a whole batch"
    ) in caplog.text
    (entry,) = check.health()
    assert entry["library"] == "faster-whisper" and entry["version"] == "1.3.0" and entry["written_for"] == "1.2.1"
    assert entry["hook"] == "_batched_segments_generator" and entry["instead"].startswith("faster-whisper's own")

    # The public pipeline, then, not the ramped one.
    monkeypatch.setattr(fw_hooks, "check", lambda: check)
    pipeline = fw_hooks.batched_pipeline(types.SimpleNamespace(), (1, 2), lambda **_: None)
    assert type(pipeline) is transcribe.BatchedInferencePipeline


def test_another_version_with_every_name_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        report([fw_hooks.LIBRARY.examine(found="1.2.2")], logging.getLogger("test"))
    assert "faster-whisper 1.2.2 is installed; whisper-mcp's hooks into it were written for 1.2.1" in caplog.text
    assert "Every name they rely on is present" in caplog.text


# -- openai-whisper: progress and streamed features are fatal ---------------


def test_openai_whisper(monkeypatch: pytest.MonkeyPatch) -> None:
    passes(ow_hooks.LIBRARY)
    transcribe = importlib.import_module(ow_hooks.MODULE)
    monkeypatch.delattr(transcribe, "log_mel_spectrogram")
    check = ow_hooks.LIBRARY.examine(found="20260101")
    assert [lost.hook.name for lost in check.fatal] == ["log_mel_spectrogram"]
    with pytest.raises(IncompatibleLibrary) as raised:
        check.raise_if_fatal()
    assert str(raised.value) == (
        "openai-whisper 20260101 is installed, but whisper-mcp's hook `log_mel_spectrogram` (features "
        "computed as the audio streams in, not from the whole waveform at once) was written for 20250625 and "
        "`whisper.transcribe.log_mel_spectrogram(audio, n_mels, padding, device)` is gone or changed: "
        "install openai-whisper==20250625"
    )

    # A transcribe() that keeps no all_segments: its segments come when it returns.
    monkeypatch.setattr(transcribe, "transcribe", lambda model, audio, **options: {"segments": []})
    check = ow_hooks.LIBRARY.examine(found="20260101")
    assert [entry["hook"] for entry in check.health()] == ["all_segments"]
    assert check.health()[0]["instead"] == "segments arrive when the whole file is done"


def test_word_alignment_compiled_with_numbas_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numba functions swapped for ones that cache their machine code
    (the swap happens once a process), aligning as openai-whisper's own do;
    without them, word timings compile per process, as before."""
    timing = importlib.import_module(ow_hooks.TIMING)
    original = timing.dtw_cpu.py_func
    assert ow_hooks.cache_word_alignment() is True
    assert type(timing.dtw_cpu._cache).__name__ == "FunctionCache"  # numba's on-disk cache (NullCache without)
    assert timing.dtw_cpu.py_func is original
    costs = np.random.default_rng(7).random((12, 30))
    assert [list(path) for path in timing.dtw_cpu(costs)] == [list(path) for path in original(costs)]

    monkeypatch.delattr(timing, "backtrace")
    check = ow_hooks.LIBRARY.examine(found="20260101")
    assert [entry["hook"] for entry in check.health()] == ["dtw_cpu"]


# -- senko: checked by version at start-up, by names when loaded --------------


class _StandInSenko:
    """senko's Diarizer as the public path sees it: diarize_samples alone."""

    def __init__(self) -> None:
        self.calls = 0

    def diarize_samples(self, audio: np.ndarray, sample_rate: int) -> dict[str, object]:
        self.calls += 1
        centroids = {"SPEAKER_01": np.ones(3), "SPEAKER_02": np.zeros(3)}
        merged = [
            {"speaker": "SPEAKER_01", "start": 0.0, "end": 1.0},
            {"speaker": "SPEAKER_02", "start": 1.0, "end": 2.0},
        ]
        return {"merged_segments": merged, "speaker_centroids": centroids}


@pytest.mark.slow  # imports senko, and torch with it
def test_senko(monkeypatch: pytest.MonkeyPatch) -> None:
    assert senko_hooks.LIBRARY.check_version() == Check("senko", "0.2.2", "0.2.2", names_checked=False)
    # Names need senko imported (and torch): as the diarizer imports it.
    from whisper_mcp.diarization.senko import SenkoDiarizer, SpeakerHints, _lazy_umap

    _lazy_umap()
    diarizer_module = importlib.import_module("senko.diarizer")
    passes(senko_hooks.LIBRARY)
    monkeypatch.delattr(diarizer_module.Diarizer, "_perform_vad")
    check = senko_hooks.LIBRARY.examine(found="0.3.0")
    assert [entry["hook"] for entry in check.health()] == ["steps"] and not check.fatal

    # The diarizer then runs senko's public diarize_samples.
    diarizer = object.__new__(SenkoDiarizer)
    diarizer.hooks, diarizer._model = check, _StandInSenko()
    diarizer._lock = threading.Lock()
    reports: list[float] = []
    result = diarizer.diarize(np.zeros(32000, dtype=np.float32), SpeakerHints(), reports.append)
    assert [t.speaker for t in result.turns] == ["SPEAKER_01", "SPEAKER_02"] and reports == [0.0, 1.0]
    assert diarizer.embed(np.zeros(16000, dtype=np.float32)) == pytest.approx(np.full(3, 0.5))
    assert diarizer._model.calls == 2

    # Without the clustering names, speaker count hints are noted as not applied.
    clustering = next(hook for hook in senko_hooks.LIBRARY.hooks if hook.name == "clustering")
    diarizer.hooks = replace(check, lost=(*check.lost, Lost(clustering, clustering.needs)))
    result = diarizer.diarize(np.zeros(32000, dtype=np.float32), SpeakerHints(num_speakers=2), None)
    assert result.notes[0].startswith("speaker count hints are not applied with the installed senko version")


# -- FastMCP and uvicorn: fatal ---------------------------------------------


def test_fastmcp(monkeypatch: pytest.MonkeyPatch) -> None:
    passes(fastmcp_hooks.LIBRARY)
    from fastmcp.server.mixins.mcp_operations import MCPOperationsMixin

    monkeypatch.delattr(MCPOperationsMixin, "_on_list_resources")
    with pytest.raises(IncompatibleLibrary, match=r"^fastmcp 5\.0\.0 is installed, but whisper-mcp's hook "):
        fastmcp_hooks.LIBRARY.examine(found="5.0.0").raise_if_fatal()


def test_fastmcp_at_start_up_by_version_and_by_name_where_it_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    """fastmcp is imported on the first MCP request: start-up reads its version,
    and looks its names up (importing it) only where the version differs."""
    at_start = fastmcp_hooks.check_at_start_up()
    assert (at_start.found, at_start.names_checked, at_start.lost) == ("4.2.3", False, ())
    other = replace(fastmcp_hooks.LIBRARY, written_for="4.2.2")
    monkeypatch.setattr(fastmcp_hooks, "LIBRARY", other)
    monkeypatch.setattr(fastmcp_hooks, "check", functools.cache(lambda: other.examine()))
    examined = fastmcp_hooks.check_at_start_up()
    assert (examined.written_for, examined.found, examined.names_checked) == ("4.2.2", "4.2.3", True)
    from fastmcp.server.mixins.mcp_operations import MCPOperationsMixin

    monkeypatch.delattr(MCPOperationsMixin, "_on_list_resources")
    fastmcp_hooks.check.cache_clear()
    with pytest.raises(IncompatibleLibrary, match=r"^fastmcp 4\.2\.3 is installed, but whisper-mcp's hook "):
        compat.verify()


def test_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    passes(uvicorn_hooks.LIBRARY)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    monkeypatch.setattr(H11Protocol, "data_received", lambda self, chunk: None)  # a parameter renamed
    check = uvicorn_hooks.LIBRARY.examine(found="0.60.0")
    monkeypatch.setattr(uvicorn_hooks, "check", lambda: check)
    with pytest.raises(IncompatibleLibrary) as raised:
        uvicorn_hooks.guarded_protocol(10, 1.0, 1.0)
    assert str(raised.value).startswith("uvicorn 0.60.0 is installed, but whisper-mcp's hook `H11Protocol` ")
    assert str(raised.value).endswith(": install uvicorn==0.54.0")
    assert "`uvicorn.protocols.http.h11_impl.H11Protocol.data_received(self, data)`" in str(raised.value)


# -- start-up and /health ---------------------------------------------------


def test_start_up_stops_on_a_fatal_hook_and_health_lists_fallbacks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert [c.library for c in compat.verify()] == ["fastmcp", "uvicorn", "senko"]

    uvicorn_lost = Check("uvicorn", "0.54.0", "0.60.0", (Lost(uvicorn_hooks.LIBRARY.hooks[0], ("x:y",)),))
    monkeypatch.setattr(uvicorn_hooks, "check", lambda: uvicorn_lost)
    with pytest.raises(IncompatibleLibrary, match="uvicorn 0.60.0 is installed"):
        compat.verify()
    monkeypatch.undo()

    ramp = fw_hooks.LIBRARY.hooks[2]
    fallback = functools.cache(lambda: Check("faster-whisper", "1.2.1", "1.3.0", (Lost(ramp, ramp.needs),)))
    fallback()
    monkeypatch.setattr(fw_hooks, "check", fallback)
    assert [entry["hook"] for entry in compat.lost("ctranslate2")] == ["_batched_segments_generator"]
    assert compat.lost("openai") == []  # another engine's library is not this service's

    engine = FakeEngine()
    engine.engine = "ctranslate2"  # type: ignore[misc]
    with InProcessServer.start(tmp_path / "storage", engine) as server, server.client() as client:
        health = client.get("/health").json()
    assert health["status"] == "ok"
    assert [(e["library"], e["hook"]) for e in health["compat"]] == [("faster-whisper", "_batched_segments_generator")]
