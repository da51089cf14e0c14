"""Validation of per-job options: pure functions, clear messages."""

from __future__ import annotations

import pytest

from whisper_mcp.errors import InvalidInput
from whisper_mcp.options import PRIORITIES, TranscribeOptions, parse_bool, parse_options, parse_priority


def test_defaults() -> None:
    assert parse_options("tiny.en") == TranscribeOptions()


def test_full_set_parses_from_form_strings() -> None:
    opts = parse_options(
        "base",
        language="German",
        task="Translate",
        initial_prompt="Names: Anna, Jörg.",
        temperature="0",
        beam_size="5",
        word_timestamps="yes",
    )
    assert opts == TranscribeOptions("de", "translate", "Names: Anna, Jörg.", 0.0, 5, True)
    assert TranscribeOptions.from_json(opts.to_json()) == opts


def test_canonical_json_is_a_stable_cache_key() -> None:
    a = parse_options("base", language="en", word_timestamps=True)
    b = parse_options("base", language="EN", word_timestamps="true")
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize(
    ("model", "kwargs", "phrase"),
    [
        ("base", {"language": "xx"}, "unknown language"),
        ("tiny.en", {"language": "fr"}, "english-only"),
        ("tiny.en", {"task": "translate"}, "cannot translate"),
        ("base", {"task": "summarise"}, "task must be"),
        ("base", {"temperature": "-0.1"}, "from 0 to 1"),
        ("base", {"temperature": "hot"}, "a number"),
        ("base", {"beam_size": "11"}, "from 1 to 10"),
        ("base", {"beam_size": "2.5"}, "whole number"),
        ("base", {"beam_size": 2, "temperature": 0.4}, "temperature 0"),
        ("base", {"initial_prompt": "x" * 1001}, "1000 characters"),
        ("base", {"word_timestamps": "perhaps"}, "true or false"),
    ],
)
def test_invalid_values(model: str, kwargs: dict, phrase: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_options(model, **kwargs)
    assert phrase in info.value.message.lower()


def test_auto_and_blank_language_mean_detect() -> None:
    for value in (None, "", " ", "auto", "detect"):
        assert parse_options("base", language=value).language is None


def test_priority() -> None:
    assert parse_priority(None) == PRIORITIES["normal"]
    assert parse_priority(" URGENT ") == 0
    assert parse_priority("low") == 2
    with pytest.raises(InvalidInput, match="urgent, normal, low"):
        parse_priority("now")


def test_parse_bool() -> None:
    assert parse_bool("x", "1") and parse_bool("x", True) and not parse_bool("x", "off") and not parse_bool("x", None)
