"""Transcription features in process, over a fake engine: output formats,
options and their plumbing to the engine, models, the transcript cache,
priorities, cancel, the job list, MCP resources and tools. What the real
models make of the options is tested in tests/e2e/test_features_e2e.py and
tests/e2e/test_engines_e2e.py."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from whisper_mcp.engines.audio import probe_audio
from whisper_mcp.options import TranscribeOptions

from fakes import FakeEngine
from helpers import FIXTURES, LONG_AUDIO, ROUTED, InProcessServer, submit, wait_done, wait_status

SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+?)(?:\n\n|\Z)", re.S)
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+?)(?:\n\n|\Z)", re.S)


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def fake_text(path: Path) -> str:
    return f"fake transcript of {probe_audio(path).duration:.1f} seconds\n"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[InProcessServer]:
    """Jobs wait before their first window until ``engine.gate`` is set; word timings on request."""
    engine = FakeEngine(words=True)
    engine.gate.clear()
    with InProcessServer.start(tmp_path / "storage", engine) as srv:
        yield srv


def test_output_formats(tmp_path: Path) -> None:
    engine = FakeEngine(segments=5, words=True)
    with InProcessServer.start(tmp_path / "storage", engine) as srv, srv.client() as client:
        job = submit(client, LONG_AUDIO, word_timestamps="true")
        assert wait_done(client, job["job_id"])["status"] == "completed"
        assert engine.calls[-1][1].word_timestamps is True
        base = f"/download/{job['job_id']}"

        data = json.loads(client.get(base, params={"format": "json"}).text)
        assert data["language"] == "en" and data["duration"] > 60
        segments = data["segments"]
        assert len(segments) == 5
        for seg in segments:
            assert seg["start"] <= seg["end"]
            assert seg["words"], seg
            for w in seg["words"]:
                assert seg["start"] - 0.01 <= w["start"] <= w["end"] <= seg["end"] + 0.01
                assert 0 <= w["probability"] <= 1
        assert " ".join(w["word"] for s in segments for w in s["words"]) == data["text"]

        srt = client.get(base, params={"format": "srt"})
        assert srt.headers["content-type"].startswith("application/x-subrip")
        assert srt.headers["content-disposition"] == f'attachment; filename="{job["job_id"]}.srt"'
        cues = SRT_CUE.findall(srt.text)
        assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
        starts = [seconds(*c[1:5]) for c in cues]
        assert starts == sorted(starts) and len(cues) == len(segments)
        assert starts == pytest.approx([s["start"] for s in segments], abs=0.001)
        assert [c[9].strip() for c in cues] == [s["text"] for s in segments]

        vtt = client.get(base, params={"format": "vtt"}).text
        assert vtt.startswith("WEBVTT")
        vtt_cues = VTT_CUE.findall(vtt)
        assert len(vtt_cues) == len(cues)
        assert [seconds(*c[0:4]) for c in vtt_cues] == starts

        tsv = client.get(base, params={"format": "tsv"}).text.splitlines()
        assert tsv[0] == "start\tend\ttext" and len(tsv) == len(segments) + 1

        txt = client.get(base, params={"format": "txt", "attachment": "1"})
        assert txt.text.strip() == data["text"]
        assert txt.headers["content-disposition"] == f'attachment; filename="{job["job_id"]}.txt"'

        status_srt = client.get(f"/status/{job['job_id']}", params={"format": "srt"}).json()
        assert status_srt["transcript"] == srt.text and status_srt["format"] == "srt"

        bad = client.get(base, params={"format": "docx"})
        assert bad.status_code == 400 and "txt, srt, vtt, json, tsv" in bad.json()["error"]["message"]
        assert client.get(f"/status/{job['job_id']}", params={"format": "docx"}).status_code == 400


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"task": "summarise"}, "task"),
        ({"task": "translate", "model": "tiny.en"}, "english-only"),
        ({"temperature": "2"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"beam_size": "0"}, "beam_size"),
        ({"beam_size": "5", "temperature": "0.5"}, "temperature 0"),
        ({"word_timestamps": "maybe"}, "true or false"),
        ({"priority": "asap"}, "urgent, normal, low"),
        ({"initial_prompt": "x" * 1001}, "1000"),
        ({"cache": "sometimes"}, "cache must be true or false"),
    ],
)
def test_invalid_options_are_clear_400s(
    fake_server: InProcessServer, fake_client: httpx.Client, fields: dict, phrase: str
) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        response = fake_client.post("/transcribe", files={"file": ("short.wav", f)}, data=fields)
    assert response.status_code == 400, response.text
    assert phrase in response.json()["error"]["message"].lower()
    assert fake_client.get("/jobs").json()["total"] == 0
    assert list((fake_server.storage / "incoming").iterdir()) == []


def test_beam_search_and_prompt_reach_the_engine(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    job = submit(fake_client, FIXTURES / "speech.wav", beam_size="3", initial_prompt="Meeting notes.", temperature="0")
    record = wait_done(fake_client, job["job_id"])
    assert record["status"] == "completed", record
    assert record["options"] == {
        "beam_size": 3,
        "initial_prompt": "Meeting notes.",
        "task": "transcribe",
        "temperature": 0.0,
    }
    assert fake_server.engine.calls == [
        (
            "tiny.en",
            TranscribeOptions(language=None, initial_prompt="Meeting notes.", temperature=0.0, beam_size=3, **ROUTED),
        )
    ]
    assert record["transcript"] == fake_text(FIXTURES / "speech.wav")


def test_language_detection_and_translation_with_base(tmp_path: Path) -> None:
    engine = FakeEngine(detected=("es", 0.93))
    with InProcessServer.start(tmp_path / "storage", engine) as srv, srv.client() as client:
        assert client.get("/health").json()["loaded_models"] == ["tiny.en"]
        detected = wait_done(client, submit(client, FIXTURES / "spanish.wav", model="base")["job_id"])
        assert detected["status"] == "completed", detected
        assert detected["model"] == "base"
        assert detected["language"] == "es"
        assert detected["language_probability"] == 0.93
        assert engine.calls[-1] == ("base", TranscribeOptions())

        translated = wait_done(
            client,
            submit(client, FIXTURES / "spanish.wav", model="base", task="translate", language="spanish")["job_id"],
        )
        assert translated["status"] == "completed", translated
        assert translated["options"] == {"task": "translate"} and translated["language"] == "es"
        assert "language_probability" not in translated  # named, not detected
        assert engine.calls[-1] == ("base", TranscribeOptions(language="es", task="translate"))

        # base was loaded when a job needed it, beside the start-up model.
        assert set(client.get("/health").json()["loaded_models"]) == {"tiny.en", "base"}
        models = client.get("/models").json()
        assert models["default"] == "tiny.en" and models["loads"] == 2
        loaded = {m["name"] for m in models["models"] if m["loaded"]}
        assert loaded == {"tiny.en", "base"}
        pinned = {m["name"]: m["pinned"] for m in models["models"] if m["loaded"]}
        assert pinned["tiny.en"] is True and all(m["memory_mb"] > 0 for m in models["models"] if m["loaded"])


def test_cache_returns_finished_transcript_at_once(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    first = wait_done(fake_client, submit(fake_client, FIXTURES / "short.wav", cache="true")["job_id"])
    again = submit(fake_client, FIXTURES / "short.wav", cache="true")
    assert again["status"] == "completed"
    assert again["cached"] is True and again["job_id"] != first["job_id"]
    assert again["cached_from"] == first["job_id"]
    assert again["transcript"] == first["transcript"]
    assert len(fake_server.engine.calls) == 1  # answered without transcribing again
    # Different options are a different transcript: no cache hit.
    other = submit(fake_client, FIXTURES / "short.wav", cache="true", word_timestamps="true")
    assert other.get("cached") is not True and other["status"] == "queued"
    # Nor when the caller asks for a fresh one.
    fresh = submit(fake_client, FIXTURES / "short.wav", cache="false")
    assert fresh.get("cached") is not True and fresh["status"] == "queued"
    wait_done(fake_client, other["job_id"])
    wait_done(fake_client, fresh["job_id"])
    assert len(fake_server.engine.calls) == 3


def test_priorities_cancel_and_list(held: InProcessServer) -> None:
    with held.client() as client:
        blocker = submit(client, LONG_AUDIO)
        wait_status(client, blocker["job_id"], "processing")
        low = submit(client, FIXTURES / "short.wav", priority="low")
        normal = submit(client, FIXTURES / "short.wav", priority="normal")
        doomed = submit(client, FIXTURES / "short.wav")
        urgent = submit(client, FIXTURES / "short.wav", priority="urgent")
        assert urgent["queue_position"] == 1

        queued = client.get("/jobs", params={"status": "queued"}).json()
        order = [j["job_id"] for j in queued["jobs"]]
        assert order == [urgent["job_id"], normal["job_id"], doomed["job_id"], low["job_id"]]
        assert [j["queue_position"] for j in queued["jobs"]] == [1, 2, 3, 4]
        page = client.get("/jobs", params={"limit": 2}).json()
        assert len(page["jobs"]) == 2 and page["next_offset"] == 2 and page["total"] == 5
        assert page["jobs"][0]["job_id"] == blocker["job_id"]  # the running job first
        last = client.get("/jobs", params={"limit": 2, "offset": 4}).json()
        assert len(last["jobs"]) == 1 and last["next_offset"] is None
        assert client.get("/jobs", params={"status": "lost"}).status_code == 400
        assert client.get("/jobs", params={"limit": 0}).status_code == 400
        assert client.get("/jobs", params={"limit": "many"}).status_code == 400

        cancelled = client.delete(f"/jobs/{doomed['job_id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        running = client.delete(f"/jobs/{blocker['job_id']}").json()
        assert running["status"] == "processing" and running["cancel_requested"] is True

        held.engine.gate.set()  # the blocker reaches its next window and stops there
        stopped = wait_status(client, blocker["job_id"], "cancelled", timeout=10)
        assert stopped["finished_at"] is not None
        records = {name: wait_done(client, job["job_id"]) for name, job in
                   {"urgent": urgent, "normal": normal, "low": low}.items()}  # fmt: skip
        assert all(r["status"] == "completed" for r in records.values())
        assert records["urgent"]["started_at"] < records["normal"]["started_at"] < records["low"]["started_at"]
        assert client.get(f"/status/{doomed['job_id']}").json()["status"] == "cancelled"
        assert client.delete(f"/jobs/{doomed['job_id']}").status_code == 409
        assert client.delete("/jobs/no-such-job").status_code == 404
        # The cancelled jobs never reached the engine's output.
        transcribed = [name for batch in held.engine.batches for name in batch]
        assert len(transcribed) == 4  # the blocker (stopped) and the three others


@pytest.mark.anyio
async def test_mcp_resources_and_new_tools(fake_server: InProcessServer, fake_client: httpx.Client) -> None:
    job = wait_done(fake_client, submit(fake_client, FIXTURES / "short.wav")["job_id"])
    async with Client(f"{fake_server.url}/mcp") as mcp:
        names = {t.name for t in await mcp.list_tools()}
        assert {"cancel_transcription", "list_transcription_jobs", "list_models"} <= names
        templates = {t.uri_template for t in await mcp.list_resource_templates()}
        assert {"transcript://{job_id}", "transcript://{job_id}/srt", "transcript://{job_id}/json"} <= templates
        status = (
            await mcp.call_tool("check_transcription_status", {"job_id": job["job_id"], "format": "vtt"})
        ).structured_content
        assert status["transcript"].startswith("WEBVTT")
        srt = await mcp.read_resource(status["resources"]["srt"])
        assert srt[0].text.startswith("1\n") and "-->" in srt[0].text
        text = await mcp.read_resource(f"transcript://{job['job_id']}")
        assert text[0].text == fake_text(FIXTURES / "short.wav") == job["transcript"]
        listing = (
            await mcp.call_tool("list_transcription_jobs", {"status": "completed", "limit": 5})
        ).structured_content
        assert [j["job_id"] for j in listing["jobs"]] == [job["job_id"]]
        models = (await mcp.call_tool("list_models", {})).structured_content
        assert any(m["name"] == "tiny.en" and m["loaded"] for m in models["models"])


@pytest.mark.anyio
async def test_priority_options_and_cancel_over_mcp(held: InProcessServer) -> None:
    with held.client() as client:
        blocker = submit(client, LONG_AUDIO)
        wait_status(client, blocker["job_id"], "processing")
    audio = base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()
    async with Client(f"{held.url}/mcp") as mcp:
        low = (
            await mcp.call_tool("transcribe_wav", {"audio_base64": audio, "priority": "low", "cache": False})
        ).structured_content
        urgent = (
            await mcp.call_tool(
                "transcribe_wav",
                {"audio_base64": audio, "priority": "urgent", "word_timestamps": True, "cache": False},
            )
        ).structured_content
        assert urgent["queue_position"] == 1 and urgent["priority"] == "urgent"
        assert urgent["options"] == {"task": "transcribe", "word_timestamps": True}
        cancelled = (await mcp.call_tool("cancel_transcription", {"job_id": low["job_id"]})).structured_content
        assert cancelled["status"] == "cancelled"
        running = (await mcp.call_tool("cancel_transcription", {"job_id": blocker["job_id"]})).structured_content
        assert running["status"] == "processing" and running["cancel_requested"] is True
        held.engine.gate.set()
        done = (
            await mcp.call_tool(
                "check_transcription_status", {"job_id": urgent["job_id"], "wait_seconds": 10, "format": "json"}
            )
        ).structured_content
    assert done["status"] == "completed", done
    segments = json.loads(done["transcript"])["segments"]
    assert segments and all(seg.get("words") for seg in segments)
    assert held.engine.calls[-1][1].word_timestamps is True
