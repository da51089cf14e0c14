"""Settings: parsed once from flags and WHISPER_MCP_* variables, typed, with
errors that name the flag or variable; docs/configuration.md's table lists them all."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from whisper_mcp.cli import main
from whisper_mcp.config import ConfigError, Settings

from helpers import ROOT


def test_defaults_and_typed_fields() -> None:
    s = Settings.from_env({})
    assert s.port == 8765 and s.callback_retry_delays == (1.0, 5.0, 30.0, 120.0)
    assert s.allowed_origins == () and s.token == "" and s.delete_audio is True


def test_environment_then_flags_win() -> None:
    env = {"WHISPER_MCP_PORT": "9000", "WHISPER_MCP_ALLOWED_ORIGINS": "https://a.example, https://b.example ,"}
    s = Settings.from_env(env, port="9100", callback_retry_delays="0.5,2")
    assert s.port == 9100
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert s.callback_retry_delays == (0.5, 2.0)


def test_engine_aliases_and_choices() -> None:
    assert Settings.from_env({"WHISPER_MCP_ENGINE": "faster-whisper"}).engine == "ctranslate2"
    with pytest.raises(ConfigError, match="WHISPER_MCP_ENGINE='tensorrt': choose one of openai, ctranslate2"):
        Settings.from_env({"WHISPER_MCP_ENGINE": "tensorrt"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WHISPER_MCP_PORT": "eighty"}, "WHISPER_MCP_PORT='eighty': must be of type int"),
        ({"WHISPER_MCP_DELETE_AUDIO": "maybe"}, "WHISPER_MCP_DELETE_AUDIO='maybe': must be true or false"),
        ({"WHISPER_MCP_CALLBACK_RETRY_DELAYS": "1,-5"}, "must not be negative"),
        ({"WHISPER_MCP_CALLBACK_RETRY_DELAYS": "1,soon"}, "WHISPER_MCP_CALLBACK_RETRY_DELAYS='1,soon'"),
    ],
)
def test_bad_values_name_their_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_token_file_is_read_once_at_parse_time(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\nsecond line ignored\n")
    s = Settings.from_env({}, token_file=str(token_file))
    token_file.unlink()  # nothing reads it later
    assert s.token == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env({"WHISPER_MCP_TOKEN_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="cannot read token file"):
        Settings.from_env({}, token_file=str(tmp_path / "missing"))


def test_the_cli_exits_with_the_message(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPER_MCP_MAX_UPLOAD_MB", "lots")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 2
    assert "WHISPER_MCP_MAX_UPLOAD_MB='lots': must be of type int" in capsys.readouterr().err


def test_configuration_table_lists_every_setting() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text()
    for f in fields(Settings):
        assert f"`WHISPER_MCP_{f.name.upper()}" in table, f"docs/configuration.md's table lacks {f.name}"
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        assert f"`{flag}`" in table or f"`{flag} " in table, f"docs/configuration.md's table lacks {flag}"


def test_a_storage_url_names_an_s3_bucket() -> None:
    assert (
        Settings.from_env({"WHISPER_MCP_STORAGE_URL": "s3://whisper-jobs/prod"}).storage_url == "s3://whisper-jobs/prod"
    )
    assert Settings.from_env({}, storage_url="s3://whisper-jobs").storage_url == "s3://whisper-jobs"
    assert Settings.from_env({}).storage_url == ""  # the storage folder alone, as before
    for bad in ("/mnt/bucket", "https://s3.amazonaws.com/x", "s3://UPPER/x", "s3://ab"):
        with pytest.raises(ConfigError, match="must be s3://bucket or s3://bucket/prefix"):
            Settings.from_env({}, storage_url=bad)


def test_the_object_storage_example_of_the_docs_configures_what_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/replicas.md's object storage commands: its variables and flags
    become the settings and the bucket client (no request is sent)."""
    from whisper_mcp import cli
    from whisper_mcp.queue.objects import connect

    section = (ROOT / "docs" / "replicas.md").read_text().split("## Object storage", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under docs/replicas.md's Object storage"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    for line in lines:
        if line.startswith("export "):
            for assignment in line.removeprefix("export ").split():
                name, value = assignment.split("=", 1)
                monkeypatch.setenv(name, value)
    [command] = [line.split() for line in lines if line.startswith("whisper-mcp serve")]
    seen: list[Settings] = []
    monkeypatch.setattr(cli, "serve", lambda settings: seen.append(settings) or 0)
    assert cli.main(command[1:]) == 0
    [settings] = seen
    assert settings.storage_url == "s3://whisper-jobs/prod" and settings.database_url.startswith("postgresql://")
    client = connect(settings.storage_url, endpoint=settings.storage_endpoint, region=settings.storage_region)
    assert client.config["endpoint"] == "http://minio.internal:9000" and client.config["bucket"] == "whisper-jobs"
    assert client.config["access_key_id"] == "whisper" and client.prefix == "prod"
