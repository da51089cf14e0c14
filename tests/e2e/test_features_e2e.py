"""Transcription features end to end: formats, options, models, priorities,
cancel, list, cache, MCP resources. Real server, real models."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from whisper_mcp.config import default_model_cache

from helpers import FIXTURES, LONG_AUDIO, ServerProcess, wait_done, words

pytestmark = pytest.mark.e2e


def submit(client: httpx.Client, path: Path, **fields: str) -> dict:
    fields.setdefault("cache", "false")
    with open(path, "rb") as f:
        response = client.post("/transcribe", files={"file": (path.name, f)}, data=fields)
    assert response.status_code == 202, response.text
    return response.json()


def wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/status/{job_id}").json()
        if record["status"] == status:
            return record
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never reached {status}: {record}")


SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+?)(?:\n\n|\Z)", re.S)
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+?)(?:\n\n|\Z)", re.S)


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_output_formats(client: httpx.Client) -> None:
    job = submit(client, LONG_AUDIO, word_timestamps="true")
    assert wait_done(client, job["job_id"], timeout=180)["status"] == "completed"
    base = f"/download/{job['job_id']}"

    data = json.loads(client.get(base, params={"format": "json"}).text)
    assert data["language"] == "en" and data["duration"] > 60
    segments = data["segments"]
    assert len(segments) > 3
    for seg in segments:
        assert seg["start"] <= seg["end"]
        assert seg["words"], seg
        for w in seg["words"]:
            assert seg["start"] - 0.01 <= w["start"] <= w["end"] <= seg["end"] + 0.01
            assert 0 <= w["probability"] <= 1

    srt = client.get(base, params={"format": "srt"})
    assert srt.headers["content-type"].startswith("application/x-subrip")
    cues = SRT_CUE.findall(srt.text)
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    starts = [seconds(*c[1:5]) for c in cues]
    assert starts == sorted(starts) and len(cues) == len(segments)
    assert starts[0] == pytest.approx(segments[0]["start"], abs=0.001)

    vtt = client.get(base, params={"format": "vtt"}).text
    assert vtt.startswith("WEBVTT")
    vtt_cues = VTT_CUE.findall(vtt)
    assert len(vtt_cues) == len(cues)
    assert [seconds(*c[0:4]) for c in vtt_cues] == starts

    tsv = client.get(base, params={"format": "tsv"}).text.splitlines()
    assert tsv[0] == "start\tend\ttext" and len(tsv) == len(segments) + 1

    status_srt = client.get(f"/status/{job['job_id']}", params={"format": "srt"}).json()
    assert status_srt["transcript"] == srt.text

    bad = client.get(base, params={"format": "docx"})
    assert bad.status_code == 400 and "txt, srt, vtt, json, tsv" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"task": "summarise"}, "task"),
        ({"task": "translate"}, "english-only"),
        ({"temperature": "2"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"beam_size": "0"}, "beam_size"),
        ({"beam_size": "5", "temperature": "0.5"}, "temperature 0"),
        ({"word_timestamps": "maybe"}, "true or false"),
        ({"priority": "asap"}, "urgent, normal, low"),
        ({"initial_prompt": "x" * 1001}, "1000"),
    ],
)
def test_invalid_options_are_clear_400s(client: httpx.Client, fields: dict, phrase: str) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        response = client.post("/transcribe", files={"file": ("short.wav", f)}, data=fields)
    assert response.status_code == 400, response.text
    assert phrase in response.json()["error"]["message"].lower()


def test_beam_search_and_prompt_work(client: httpx.Client) -> None:
    job = submit(client, FIXTURES / "speech.wav", beam_size="3", initial_prompt="Meeting notes.", temperature="0")
    record = wait_done(client, job["job_id"])
    assert record["status"] == "completed", record
    assert record["options"] == {"beam_size": 3, "initial_prompt": "Meeting notes.", "task": "transcribe", "temperature": 0.0}
    assert {"transcription", "model", "loaded"} <= words(record["transcript"])


def test_language_detection_and_translation_with_base(client: httpx.Client) -> None:
    detected = wait_done(client, submit(client, FIXTURES / "spanish.wav", model="base")["job_id"])
    assert detected["status"] == "completed", detected
    assert detected["language"] == "es"
    assert detected["language_probability"] > 0.5
    assert {"buenos", "gracias"} <= words(detected["transcript"])

    translated = wait_done(client, submit(client, FIXTURES / "spanish.wav", model="base", task="translate")["job_id"])
    assert translated["status"] == "completed", translated
    assert {"good", "morning", "thank"} <= words(translated["transcript"])

    models = client.get("/models").json()
    loaded = {m["name"] for m in models["models"] if m["loaded"]}
    assert {"tiny.en", "base"} <= loaded


def test_cache_returns_finished_transcript_at_once(client: httpx.Client) -> None:
    first = wait_done(client, submit(client, FIXTURES / "short.wav", cache="true")["job_id"])
    again = submit(client, FIXTURES / "short.wav", cache="true")
    assert again["status"] == "completed"
    assert again["cached"] is True and again["job_id"] != first["job_id"]
    assert again["transcript"] == first["transcript"]
    # Different options are a different transcript: no cache hit.
    other = submit(client, FIXTURES / "short.wav", cache="true", word_timestamps="true")
    assert other.get("cached") is not True


def test_priorities_cancel_and_list(client: httpx.Client) -> None:
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
    assert len(page["jobs"]) == 2 and page["next_offset"] == 2 and page["total"] >= 5
    assert page["jobs"][0]["job_id"] == blocker["job_id"]  # the running job first
    assert client.get("/jobs", params={"status": "lost"}).status_code == 400

    cancelled = client.delete(f"/jobs/{doomed['job_id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    running = client.delete(f"/jobs/{blocker['job_id']}").json()
    assert running["status"] == "processing" and running["cancel_requested"] is True

    stopped = wait_status(client, blocker["job_id"], "cancelled", timeout=60)
    assert stopped["finished_at"] is not None
    records = {name: wait_done(client, job["job_id"]) for name, job in
               {"urgent": urgent, "normal": normal, "low": low}.items()}  # fmt: skip
    assert all(r["status"] == "completed" for r in records.values())
    assert records["urgent"]["started_at"] < records["normal"]["started_at"] < records["low"]["started_at"]
    assert client.get(f"/status/{doomed['job_id']}").json()["status"] == "cancelled"
    assert client.delete(f"/jobs/{doomed['job_id']}").status_code == 409
    assert client.delete("/jobs/no-such-job").status_code == 404


@pytest.mark.anyio
async def test_mcp_resources_and_new_tools(server: ServerProcess, client: httpx.Client) -> None:
    job = wait_done(client, submit(client, FIXTURES / "short.wav")["job_id"])
    async with Client(f"{server.url}/mcp") as mcp:
        names = {t.name for t in await mcp.list_tools()}
        assert {"cancel_transcription", "list_transcription_jobs", "list_models"} <= names
        templates = {t.uri_template for t in await mcp.list_resource_templates()}
        assert {"transcript://{job_id}", "transcript://{job_id}/{format}"} <= templates
        status = (await mcp.call_tool("check_transcription_status", {"job_id": job["job_id"], "format": "vtt"})).data
        assert status["transcript"].startswith("WEBVTT")
        srt = await mcp.read_resource(status["resources"]["srt"])
        assert "-->" in srt[0].text and "1\n" in srt[0].text
        text = await mcp.read_resource(f"transcript://{job['job_id']}")
        assert {"hello", "world"} <= words(text[0].text)
        listing = (await mcp.call_tool("list_transcription_jobs", {"status": "completed", "limit": 5})).data
        assert listing["jobs"] and all(j["status"] == "completed" for j in listing["jobs"])
        models = (await mcp.call_tool("list_models", {})).data
        assert any(m["name"] == "tiny.en" and m["loaded"] for m in models["models"])


@pytest.fixture
def budget_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Room for tiny.en (pinned, ~150 MB) and one more model only.
    srv = ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--model-memory-mb", "500").start()
    yield srv
    srv.stop()


def test_models_load_lazily_and_are_evicted_under_budget(budget_server: ServerProcess) -> None:
    with httpx.Client(base_url=budget_server.url, timeout=30) as client:
        assert client.get("/health").json()["loaded_models"] == ["tiny.en"]
        job = wait_done(client, submit(client, FIXTURES / "short.wav", model="base")["job_id"])
        assert job["status"] == "completed" and {"hello", "world"} <= words(job["transcript"])
        assert set(client.get("/health").json()["loaded_models"]) == {"tiny.en", "base"}
        # A third model would not fit: base goes, tiny.en (the start-up model) stays.
        ckpt = default_model_cache() / "converted" / "base.pt"
        assert ckpt.exists()
        job = wait_done(client, submit(client, FIXTURES / "short.wav", model=str(ckpt))["job_id"])
        assert job["status"] == "completed", job
        models = client.get("/models").json()
        assert models["unloads"] >= 1
        loaded = {m["name"] for m in models["models"] if m["loaded"]}
        assert "tiny.en" in loaded and "base" not in loaded


@pytest.mark.anyio
async def test_priority_options_and_cancel_over_mcp(server: ServerProcess, client: httpx.Client) -> None:
    import base64

    blocker = submit(client, LONG_AUDIO)
    wait_status(client, blocker["job_id"], "processing")
    audio = base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()
    async with Client(f"{server.url}/mcp") as mcp:
        low = (await mcp.call_tool("transcribe_wav", {"audio_base64": audio, "priority": "low", "cache": False})).data
        urgent = (
            await mcp.call_tool(
                "transcribe_wav",
                {"audio_base64": audio, "priority": "urgent", "word_timestamps": True, "cache": False},
            )
        ).data
        assert urgent["queue_position"] == 1 and urgent["priority"] == "urgent"
        cancelled = (await mcp.call_tool("cancel_transcription", {"job_id": low["job_id"]})).data
        assert cancelled["status"] == "cancelled"
        running = (await mcp.call_tool("cancel_transcription", {"job_id": blocker["job_id"]})).data
        assert running.get("cancel_requested") is True or running["status"] == "cancelled"
        done = (
            await mcp.call_tool(
                "check_transcription_status", {"job_id": urgent["job_id"], "wait_seconds": 50, "format": "json"}
            )
        ).data
    assert done["status"] == "completed", done
    segments = json.loads(done["transcript"])["segments"]
    assert segments and all(seg.get("words") for seg in segments)
