"""``whisper-mcp transcribe --job-id`` and ``--prompt``, and the exit codes that
tell refused credentials (4) from an unreachable service (3); against the real
app over a fake engine, in process."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import httpx
import pytest

from whisper_mcp.client.cli import add_client_commands, run_client_command

from helpers import FIXTURES, InProcessServer, free_port


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="whisper-mcp")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client_command(parser.parse_args(argv))


def job_ids(client: httpx.Client) -> list[str]:
    return [j["job_id"] for j in client.get("/jobs").json()["jobs"]]


def test_the_same_job_id_and_file_answer_with_the_existing_job(
    fake_server: InProcessServer, fake_client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "standup.wav"
    shutil.copy(FIXTURES / "short.wav", recording)
    base = ["transcribe", str(recording), "--url", fake_server.url, "--job-id", "standup-0930"]

    assert cli([*base, "--no-wait"]) == 0
    assert capsys.readouterr().out == "standup-0930\n"
    assert cli([*base, "--out", str(tmp_path / "out")]) == 0  # re-run: waits for that job
    assert capsys.readouterr().out == f"{tmp_path / 'out' / 'standup.txt'}\n"
    assert cli([*base, "--no-wait"]) == 0
    assert capsys.readouterr().out == "standup-0930\n"
    assert job_ids(fake_client) == ["standup-0930"]

    other = tmp_path / "other.wav"
    shutil.copy(FIXTURES / "speech.wav", other)
    assert cli(["transcribe", str(other), "--url", fake_server.url, "--job-id", "standup-0930"]) == 2
    assert "already used by a job with different audio" in capsys.readouterr().err
    assert job_ids(fake_client) == ["standup-0930"]


def test_a_job_id_is_checked_before_anything_is_sent(
    fake_server: InProcessServer, fake_client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    two = [str(FIXTURES / "short.wav"), str(FIXTURES / "speech.wav")]
    assert cli(["transcribe", *two, "--url", fake_server.url, "--job-id", "both"]) == 2
    assert "--job-id names one job: give one FILE" in capsys.readouterr().err
    assert cli(["transcribe", two[0], "--url", fake_server.url, "--job-id", "-no spaces"]) == 2
    assert "--job-id '-no spaces': use 1-128 letters" in capsys.readouterr().err
    assert job_ids(fake_client) == []


def test_prompt_reaches_the_engine(fake_server: InProcessServer, tmp_path: Path) -> None:
    argv = ["transcribe", str(FIXTURES / "short.wav"), "--url", fake_server.url, "--out", str(tmp_path)]
    assert cli([*argv, "--prompt", "Kubernetes, Grafana", "--no-cache"]) == 0
    assert [options.initial_prompt for _, options in fake_server.engine.calls] == ["Kubernetes, Grafana"]


def test_refused_credentials_exit_4_and_an_unreachable_service_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WHISPER_MCP_TOKEN", raising=False)
    short = str(FIXTURES / "short.wav")
    with InProcessServer.start(tmp_path / "storage", token="s3cret") as srv:
        for argv in (["status"], ["jobs"], ["transcribe", short, "--no-wait"], ["status", "some-job"]):
            assert cli([*argv, "--url", srv.url]) == 4, argv
            assert "no token given: use --token or WHISPER_MCP_TOKEN" in capsys.readouterr().err
            assert cli([*argv, "--url", srv.url, "--token", "wrong"]) == 4, argv
            err = capsys.readouterr().err
            assert "whisper-mcp: error:" in err and "no token given" not in err
        monkeypatch.setenv("WHISPER_MCP_TOKEN", "s3cret")
        assert cli(["transcribe", short, "--url", srv.url, "--out", str(tmp_path)]) == 0
    dead = f"http://127.0.0.1:{free_port()}"
    for argv in (["status"], ["jobs"], ["transcribe", short, "--no-wait"]):
        assert cli([*argv, "--url", dead]) == 3, argv
        assert "cannot reach the service" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["transcribe", "status", "jobs", "watch"])
def test_help_lists_the_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "3  service unreachable" in out and "4  credentials refused (HTTP 401/403)" in out
