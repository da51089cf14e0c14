"""The user docs hold together: every relative link in README.md, MONITOR.md
and docs/ leads to a file that exists (and, with a ``#``, to a heading in
it), the README stays a short front page, and the docs speak to users: no
issue numbers, commit hashes or "this run"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT

DOCS = [ROOT / "README.md", ROOT / "MONITOR.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Words about how the docs were made, not about the service.
PROJECT_TALK = re.compile(r"[Ii]ssue [0-9]+|this (run|session)")
# A commit hash: 7-40 hex digits, with a letter and a digit, standing alone.
COMMIT = re.compile(r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/-])")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    seen: dict[str, int] = {}
    found = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(prose(doc.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_docs_folder_is_there() -> None:
    assert len(DOCS) > 3, DOCS


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_readme_is_a_front_page() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_speak_to_users(doc: Path) -> None:
    text = doc.read_text()
    talk = [m.group(0) for m in PROJECT_TALK.finditer(text)]
    assert not talk, f"{doc.name} talks about the project's history: {talk}"
    hashes = COMMIT.findall(text)
    assert not hashes, f"{doc.name} names commits: {hashes}; dated figures go in bench/README.md"
