"""Extracts the schemas that the /v1 tests check answers against from OpenAI's
OpenAPI document (openapi.json of github.com/openai/openai-openapi), with
every schema they refer to, into schemas.json beside this file. Run by hand
when the vendored copy is refreshed; the tests read only schemas.json:

    python tests/openai_schema/extract.py path/to/openapi.json <commit>
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOURCE = "https://github.com/openai/openai-openapi"
# What /v1 answers: its bodies, stream events and errors.
ROOTS = (
    "CreateTranscriptionResponseJson",
    "CreateTranscriptionResponseVerboseJson",
    "CreateTranscriptionResponseDiarizedJson",
    "CreateTranscriptionResponseStreamEvent",
    "CreateTranslationResponseJson",
    "CreateTranslationResponseVerboseJson",
    "TranscriptTextDeltaEvent",
    "TranscriptTextDoneEvent",
    "TranscriptTextSegmentEvent",
    "TranscriptionSegment",
    "TranscriptionWord",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)
_PREFIX = "#/components/schemas/"


def refs(node: Any) -> Iterator[str]:
    """The names of the component schemas ``node`` refers to, at any depth."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PREFIX):
            yield ref[len(_PREFIX) :]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def extract(document: dict[str, Any], commit: str) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    wanted: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted[name] = schemas[name]
            todo.extend(refs(schemas[name]))
    return {
        # Kept where OpenAPI puts them, so the documents' own "$ref"s resolve unchanged.
        "x-source": {
            "url": SOURCE,
            "file": "openapi.json",
            "commit": commit,
            "version": document["info"]["version"],
            "license": "MIT, Copyright (c) OpenAI (https://openai.com); see LICENSE beside this file",
        },
        "components": {"schemas": dict(sorted(wanted.items()))},
    }


def main(argv: list[str]) -> None:
    source, commit = Path(argv[1]), argv[2]
    out = Path(__file__).with_name("schemas.json")
    vendored = extract(json.loads(source.read_text()), commit)
    out.write_text(json.dumps(vendored, indent=1, ensure_ascii=False) + "\n")
    print(f"{out}: {len(vendored['components']['schemas'])} schemas")


if __name__ == "__main__":
    main(sys.argv)
