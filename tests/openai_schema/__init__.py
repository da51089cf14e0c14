"""OpenAI's published schemas for what ``/v1`` answers (vendored in
schemas.json; see README.md), and the checks the tests run with them.

Each body is checked against the schema of its own kind (``json`` against
CreateTranscriptionResponseJson, and so on), not against the route's
``oneOf``: OpenAI's plain JSON schema asks only for ``text``, so a verbose or
diarized body matches two branches and no body could pass the ``oneOf``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

DOCUMENT: dict[str, Any] = json.loads(Path(__file__).with_name("schemas.json").read_text())
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
# The schema for each event of the transcription stream, by its type.
STREAM_EVENTS = {
    "transcript.text.delta": "TranscriptTextDeltaEvent",
    "transcript.text.done": "TranscriptTextDoneEvent",
    "transcript.text.segment": "TranscriptTextSegmentEvent",
}
# Where OpenAI's schemas allow null: an error's param and code.
NULLABLE = {"error.param", "error.code"}


@cache
def _validator(name: str) -> Draft202012Validator:
    # The whole document as the root, so "#/components/schemas/..." resolves.
    return Draft202012Validator({**DOCUMENT, "$ref": f"#/components/schemas/{name}"})


def problems(instance: Any, name: str) -> list[str]:
    """What in ``instance`` breaks schema ``name``; empty if nothing does."""
    found = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _validator(name).iter_errors(instance)
    ]
    # A null where the schema says nothing (an extension field) is refused too.
    found += [f"{path}: null" for path in nulls(instance) if path not in NULLABLE]
    return sorted(set(found))


def nulls(instance: Any, path: str = "") -> Iterator[str]:
    """The dotted paths of the nulls in ``instance``."""
    if instance is None:
        yield path
    elif isinstance(instance, dict):
        for key, value in instance.items():
            yield from nulls(value, f"{path}.{key}" if path else str(key))
    elif isinstance(instance, list):
        for i, value in enumerate(instance):
            yield from nulls(value, f"{path}[{i}]")


def check(instance: Any, name: str) -> None:
    found = problems(instance, name)
    assert not found, f"not OpenAI's {name}: {found}\n{json.dumps(instance, indent=1)[:2000]}"


def stream_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON data of each event in a server-sent event stream."""
    return [json.loads(line[len("data:") :]) for line in lines if line.startswith("data:")]


def check_stream(events: list[dict[str, Any]]) -> None:
    """Each event as OpenAI's transcription stream sends it: a stream event of
    its type, or an error object."""
    assert events, "no events"
    for data in events:
        if "error" in data:
            check(data, "ErrorResponse")
            continue
        check(data, "CreateTranscriptionResponseStreamEvent")
        check(data, STREAM_EVENTS[data["type"]])
