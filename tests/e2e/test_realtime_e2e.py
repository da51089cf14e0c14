"""Live transcription (/v1/realtime) with the official openai SDK against the
real server and model: server VAD splits two utterances, deltas join to each
completed transcript, the session downloads as SRT afterwards, and its
audio (store=audio) as a WAV; manual commits
of G.711 audio in the older session shape through docs/realtime.md's nginx
settings; and the docs' snippet, run as written. Protocol errors and refusals
are tested in process in tests/unit/test_realtime_ws.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from whisper_mcp.engines.audio import decode_audio
from whisper_mcp.server.realtime import g711

from helpers import FIXTURES, ROOT, ServerProcess, free_port, heard_live, words

pytestmark = pytest.mark.e2e

SPEECH_WORDS = {"transcription", "services", "model", "meeting", "morning", "report"}
SHORT_WORDS = {"hello", "world", "testing"}
DOC = (ROOT / "docs" / "realtime.md").read_text()
NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
CHUNK = 4800  # 100 ms of PCM16 at 24 kHz


def samples_24k(path: Path) -> np.ndarray:
    x = decode_audio(path)
    return np.interp(np.arange(len(x) * 3 // 2) / 1.5, np.arange(len(x)), x)


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def ulaw(path: Path) -> bytes:
    """8 kHz mu-law: each sample as the code whose value is nearest."""
    x = (decode_audio(path)[::2] * 32767).astype(np.int32)
    table = g711.ulaw_table().astype(np.int32)
    order = np.argsort(table)
    at = np.clip(np.searchsorted(table[order], x), 1, 255)
    nearer = np.where(np.abs(table[order][at - 1] - x) <= np.abs(table[order][at] - x), at - 1, at)
    return order[nearer].astype(np.uint8).tobytes()


def snippet(language: str, after: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", DOC.split(after, 1)[1], re.S)
    assert found, f"no ```{language} block after {after!r} in docs/realtime.md"
    return found.group(1)


def client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


async def collect(conn: Any, completed: int) -> list[Any]:
    events = []
    async for event in conn:
        events.append(event)
        if sum(e.type.endswith(".completed") for e in events) == completed or event.type == "error":
            break
    return events


def deltas_join(events: list[Any]) -> dict[str, str]:
    """Each completed item's transcript, checked to be its deltas joined."""
    transcripts = {}
    for done in (e for e in events if e.type == "conversation.item.input_audio_transcription.completed"):
        deltas = [e.delta for e in events if e.type.endswith(".delta") and e.item_id == done.item_id]
        assert "".join(deltas) == done.transcript, (deltas, done.transcript)
        position = events.index(done)
        assert all(
            events.index(e) < position for e in events if e.type.endswith(".delta") and e.item_id == done.item_id
        )
        transcripts[done.item_id] = done.transcript
    return transcripts


def test_server_vad_splits_utterances_and_the_session_is_kept(server: ServerProcess, tmp_path: Path) -> None:
    session: dict[str, Any] = {}
    exec(snippet("python", "## Server VAD"), {}, session)  # the docs' session, as written
    audio = pcm16(
        np.concatenate(
            [
                samples_24k(FIXTURES / "speech.wav"),
                np.zeros(36000),
                samples_24k(FIXTURES / "short.wav"),
                np.zeros(36000),
            ]
        )
    )

    async def talk() -> list[Any]:
        async with client(server.url).realtime.connect(
            model="whisper-1", extra_query={"intent": "transcription", "store": "audio"}
        ) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session=session["session"])
            assert (await conn.recv()).type == "session.updated"

            async def speak() -> None:
                for i in range(0, len(audio), CHUNK):  # at twice real time
                    await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + CHUNK]).decode())
                    await asyncio.sleep(0.05)

            speaking = asyncio.create_task(speak())
            events = await asyncio.wait_for(collect(conn, 2), 120)
            await speaking
            return events

    events = asyncio.run(talk())
    kinds = [e.type for e in events]
    assert kinds.count("input_audio_buffer.speech_started") == 2, kinds
    assert kinds.count("input_audio_buffer.speech_stopped") == 2, kinds
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert len(committed) == 2 and committed[1].previous_item_id == committed[0].item_id
    transcripts = deltas_join(events)
    first, second = (transcripts[c.item_id] for c in committed)
    assert heard_live(SPEECH_WORDS, first) and SHORT_WORDS <= words(second), transcripts

    with httpx.Client(base_url=server.url, timeout=30) as http:
        deadline = time.monotonic() + 30
        while not (jobs := [j for j in http.get("/jobs").json()["jobs"] if j["filename"] == "live transcription"]) or (
            jobs[0]["status"] != "completed"
        ):
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
        srt = http.get(f"/download/{jobs[0]['job_id']}", params={"format": "srt"}).text
        kept = http.get(f"/download/{jobs[0]['job_id']}", params={"format": "wav"})  # store=audio
    assert kept.status_code == 200 and kept.headers["content-type"] == "audio/wav", kept.text
    with wave.open(io.BytesIO(kept.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() / 16000 == pytest.approx(len(audio) / 48000, abs=0.05)
    diarized = docs_keep_audio_commands(server, jobs[0]["job_id"], tmp_path)
    assert (tmp_path / "session.wav").read_bytes() == kept.content
    assert diarized["options"]["diarize"] is True, diarized
    cues = srt.strip().split("\n\n")
    assert len(cues) == 2 and cues[0].split("\n", 2)[2] == first and cues[1].split("\n", 2)[2] == second, srt
    starts = re.findall(r"^(\d\d):(\d\d):(\d\d),(\d{3}) -->", srt, re.M)
    assert [int(s) + int(ms) / 1000 for _, _, s, ms in starts][1] > 7.0, srt  # after speech.wav's 7.5 s


def docs_keep_audio_commands(server: ServerProcess, live_job: str, folder: Path) -> dict[str, Any]:
    """docs/realtime.md's commands for a kept session's audio, run as written
    with the real curl in ``folder``: the WAV downloaded, and the diarized job
    made of it (its answer; cancelled at once: diarization is tested in
    test_diarization_e2e.py), the last command's job the same."""
    fetch, diarize, download = snippet("sh", "### Keeping the audio").strip().splitlines()
    job_id = f"session-speakers-{live_job[:12]}"  # the id as written, made unique on the shared server

    def run(command: str) -> str:
        command = command.replace("http://127.0.0.1:8765", server.url).replace("JOB_ID", live_job)
        command = command.replace("session-speakers", job_id)
        done = subprocess.run(["sh", "-c", command], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        return done.stdout

    run(fetch)
    submitted = json.loads(run(diarize))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.delete(f"/jobs/{job_id}")
    assert submitted["job_id"] == job_id and download.startswith("curl ") and "session-speakers" in download
    return submitted


@pytest.fixture(scope="module")
def through_nginx(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server behind nginx with docs/realtime.md's location, where nginx is installed."""
    if NGINX is None:
        yield server.url
        return
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (folder / "nginx.conf").write_text(
        f"worker_processes 1;\npid {folder}/nginx.pid;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  upstream whisper_mcp {{ server 127.0.0.1:{server.port}; }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n{snippet('nginx', '## Behind nginx')}  }}\n}}\n"
    )
    flags = ["-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")]
    check = subprocess.run([NGINX, "-t", *flags], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, *flags, "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (folder / "error.log").read_text()
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_manual_commits_of_g711_in_the_older_session_shape(through_nginx: str) -> None:
    audio = ulaw(FIXTURES / "short.wav")

    async def talk() -> tuple[list[Any], list[Any]]:
        query = {"intent": "transcription", "store": "false"}
        async with client(through_nginx).realtime.connect(model="whisper-1", extra_query=query) as conn:
            await conn.recv()
            await conn.send(
                {  # type: ignore[arg-type]
                    "type": "transcription_session.update",
                    "session": {"input_audio_format": "g711_ulaw", "turn_detection": None},
                }
            )
            updated = await conn.recv()
            assert updated.type == "transcription_session.updated"
            assert updated.session["input_audio_format"] == "g711_ulaw"  # type: ignore[union-attr]
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[:4000]).decode())
            await conn.input_audio_buffer.clear()
            cleared = [await conn.recv()]
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio).decode())
            await conn.input_audio_buffer.commit()
            return cleared, await asyncio.wait_for(collect(conn, 1), 120)

    cleared, events = asyncio.run(talk())
    assert cleared[0].type == "input_audio_buffer.cleared"
    transcripts = deltas_join(events)
    assert len(transcripts) == 1 and SHORT_WORDS <= words(next(iter(transcripts.values()))), transcripts


def test_the_docs_snippet_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "talk.pcm").write_bytes(pcm16(samples_24k(FIXTURES / "short.wav")))
    code = snippet("python", "## Connect with the openai SDK").replace("http://127.0.0.1:8765", server.url)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert SHORT_WORDS <= words(done.stdout), done.stdout


def test_a_session_naming_no_language_is_routed_as_a_job_is(server: ServerProcess) -> None:
    """No language and no model: the first utterance is identified as Spanish
    and decoded by the multilingual model, not as English by tiny.en."""
    audio = pcm16(samples_24k(FIXTURES / "spanish.wav"))

    async def talk() -> list[Any]:
        query = {"intent": "transcription", "store": "false"}
        async with client(server.url).realtime.connect(model="whisper-1", extra_query=query) as conn:
            await conn.recv()
            await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
            await conn.recv()
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio).decode())
            await conn.input_audio_buffer.commit()
            return await asyncio.wait_for(collect(conn, 1), 120)

    events = asyncio.run(talk())
    done = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert {"buenos", "gracias"} <= words(done.transcript), done.transcript
    assert [language.code for language in done.languages or []] == ["es"], done
