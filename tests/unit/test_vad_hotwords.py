"""The vad_filter and hotwords options: validation, the server's default, and
their way from REST form fields, MCP tool arguments, OpenAI /v1 fields and the
client CLI to the engine. Over a FakeEngine (the real engines: tests/e2e)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from whisper_mcp.client.cli import add_client_commands, transcription_options
from whisper_mcp.errors import InvalidInput
from whisper_mcp.options import TranscribeOptions, check_engine_options, parse_options

from fakes import FakeEngine
from helpers import FIXTURES, ROUTED, InProcessServer, submit, wait_done


def engine_named(name: str) -> FakeEngine:
    engine = FakeEngine()
    engine.engine = name  # what the service checks options against
    return engine


@pytest.fixture
def ct2_server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", engine_named("ctranslate2")) as srv:
        yield srv


@pytest.fixture
def openai_server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer.start(tmp_path / "storage", engine_named("openai")) as srv:
        yield srv


# -- validation -------------------------------------------------------------


def test_parse_vad_filter_and_hotwords() -> None:
    assert parse_options("tiny.en") == TranscribeOptions(vad_filter=False, hotwords=None)
    assert parse_options("tiny.en", vad_filter="true").vad_filter is True
    assert parse_options("tiny.en", vad_filter="", vad_default=True).vad_filter is True
    assert parse_options("tiny.en", vad_filter="off", vad_default=True).vad_filter is False
    opts = parse_options("tiny.en", hotwords="  Kubernetes \n Grafana ")
    assert opts.hotwords == "Kubernetes Grafana"
    assert parse_options("tiny.en", hotwords="   ").hotwords is None
    assert TranscribeOptions.from_json(opts.to_json()) == opts
    # Options stored before these fields existed still load, as the defaults.
    assert TranscribeOptions.from_json('{"language": "en"}') == TranscribeOptions(language="en")


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"vad_filter": "sometimes"}, "vad_filter must be true or false"),
        ({"hotwords": "x" * 1001}, "hotwords is limited to 1000 characters"),
        ({"hotwords": 42}, "hotwords must be text"),
    ],
)
def test_bad_values_are_refused_in_words(kwargs: dict, phrase: str) -> None:
    with pytest.raises(InvalidInput, match=phrase):
        parse_options("tiny.en", **kwargs)


def test_hotwords_only_where_the_engine_takes_them() -> None:
    check_engine_options(TranscribeOptions(hotwords="Grafana"), "ctranslate2")
    check_engine_options(TranscribeOptions(vad_filter=True), "openai")  # VAD works on both
    with pytest.raises(InvalidInput, match="hotwords is not supported by this server's engine 'openai'"):
        check_engine_options(TranscribeOptions(hotwords="Grafana"), "openai")


# -- REST -------------------------------------------------------------------


def test_rest_fields_reach_the_engine(ct2_server: InProcessServer) -> None:
    with httpx.Client(base_url=ct2_server.url, timeout=30) as client:
        job = submit(client, FIXTURES / "short.wav", vad_filter="true", hotwords="Grafana Loki")
        record = wait_done(client, job["job_id"])
    assert record["status"] == "completed", record
    assert record["options"]["vad_filter"] is True and record["options"]["hotwords"] == "Grafana Loki"
    assert ct2_server.engine.calls[-1][1] == TranscribeOptions(vad_filter=True, hotwords="Grafana Loki", **ROUTED)


def test_rest_hotwords_on_the_openai_engine_is_a_400_naming_it(openai_server: InProcessServer) -> None:
    with httpx.Client(base_url=openai_server.url, timeout=30) as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            response = client.post("/transcribe", files={"file": ("short.wav", f)}, data={"hotwords": "Grafana"})
        assert response.status_code == 400, response.text
        assert "engine 'openai'" in response.json()["error"]["message"]
        assert client.get("/jobs").json()["total"] == 0
        # vad_filter is fine there.
        record = wait_done(client, submit(client, FIXTURES / "short.wav", vad_filter="1")["job_id"])
    assert record["status"] == "completed"
    assert openai_server.engine.calls[-1][1].vad_filter is True


def test_rest_bad_vad_filter_is_a_400(fake_client: httpx.Client) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        response = fake_client.post("/transcribe", files={"file": ("short.wav", f)}, data={"vad_filter": "maybe"})
    assert response.status_code == 400
    assert "vad_filter must be true or false" in response.json()["error"]["message"]


def test_server_setting_is_the_default_and_a_job_may_override_it(tmp_path: Path) -> None:
    with (
        InProcessServer.start(tmp_path / "storage", vad_filter=True) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as client,
    ):
        wait_done(client, submit(client, FIXTURES / "short.wav")["job_id"])
        wait_done(client, submit(client, FIXTURES / "speech.wav", vad_filter="false")["job_id"])
    assert [options.vad_filter for _, options in srv.engine.calls] == [True, False]


# -- OpenAI /v1 --------------------------------------------------------------


def test_openai_fields_reach_the_engine_and_hotwords_400_names_the_param(
    ct2_server: InProcessServer, tmp_path: Path
) -> None:
    with httpx.Client(base_url=ct2_server.url, timeout=60) as client:
        with open(FIXTURES / "short.wav", "rb") as f:
            response = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("short.wav", f)},
                data={"model": "whisper-1", "vad_filter": "true", "hotwords": "Grafana"},
            )
        assert response.status_code == 200, response.text
    assert ct2_server.engine.calls[-1][1] == TranscribeOptions(vad_filter=True, hotwords="Grafana", **ROUTED)
    with (
        InProcessServer.start(tmp_path / "other", engine_named("openai")) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as client,
    ):
        with open(FIXTURES / "short.wav", "rb") as f:
            response = client.post(
                "/v1/audio/transcriptions", files={"file": ("short.wav", f)}, data={"hotwords": "Grafana"}
            )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "hotwords" and "engine 'openai'" in error["message"]


# -- MCP ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_mcp_arguments_reach_the_engine(ct2_server: InProcessServer) -> None:
    import base64

    audio = base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()
    async with Client(f"{ct2_server.url}/mcp") as mcp:
        tools = {t.name: t for t in await mcp.list_tools()}
        for name in ("transcribe_wav", "create_upload_url"):
            assert {"vad_filter", "hotwords"} <= set(tools[name].input_schema["properties"]), name
        job = (
            await mcp.call_tool(
                "transcribe_wav",
                {"audio_base64": audio, "vad_filter": True, "hotwords": "Grafana", "cache": False},
            )
        ).structured_content
        status = (
            await mcp.call_tool("check_transcription_status", {"job_id": job["job_id"], "wait_seconds": 30})
        ).structured_content
    assert status["status"] == "completed", status
    assert ct2_server.engine.calls[-1][1] == TranscribeOptions(vad_filter=True, hotwords="Grafana", **ROUTED)


# -- client CLI ----------------------------------------------------------------


def test_client_cli_flags() -> None:
    parser = argparse.ArgumentParser()
    add_client_commands(parser.add_subparsers(dest="command"))
    given = parser.parse_args(["transcribe", "--vad-filter", "--hotwords", "Grafana Loki", "a.wav"])
    assert transcription_options(given)["vad_filter"] is True
    assert transcription_options(given)["hotwords"] == "Grafana Loki"
    off = parser.parse_args(["transcribe", "--no-vad-filter", "a.wav"])
    assert transcription_options(off)["vad_filter"] is False
    unset = parser.parse_args(["transcribe", "a.wav"])
    assert transcription_options(unset)["vad_filter"] is None and transcription_options(unset)["hotwords"] is None
