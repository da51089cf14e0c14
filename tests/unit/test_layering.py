"""Every import in the package points down: the layers below, read from every
module's source (module-level, inside functions and under TYPE_CHECKING
alike), with no circle anywhere and no arrow running up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "whisper_mcp"

# Each part of the package, by the layer it sits in: a module may import its
# own part and any part of a lower layer, never one above or beside it.
LAYERS: tuple[frozenset[str], ...] = (
    # Foundations: settings, errors, the language table, durable files, logging, the heap.
    frozenset({"whisper_mcp", "config", "errors", "languages", "durable", "logs", "heap"}),
    # Records and pure transformations on them; the guarded hooks into borrowed libraries.
    frozenset({"options", "formats", "compat"}),
    frozenset({"models"}),  # weights: where they are, loading them, the pool
    frozenset({"engines"}),  # the inference backends, audio decoding
    frozenset({"diarization", "queue"}),  # the speaker step; the durable job queue
    frozenset({"transcriber"}),  # a backend, the model pool and the diarizer together
    frozenset({"server", "client"}),  # the service and its transports; the client commands
    frozenset({"cli", "testing"}),  # entry points, and test scaffolding
    frozenset({"__main__"}),  # python -m whisper_mcp
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# The imports a part may never have, whatever its layer, as the layering promises.
FORBIDDEN_LIBRARIES = {"client": {"torch", "whisper", "faster_whisper", "ctranslate2", "senko"}}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """``whisper_mcp.server.http.rest`` -> ``server``; ``whisper_mcp`` itself -> ``whisper_mcp``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(package modules ``path`` imports, top-level names of other libraries it
    imports), however spelled: ``import a.b``, ``from a import b``, relative."""
    own: set[str] = set()
    libraries: set[str] = set()
    module = module_name(path, root)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "whisper_mcp":
                libraries.add(name.split(".")[0])
                continue
            target = _longest_module(name, modules)
            if target is not None:
                own.add(target)
                break  # `from a import b`: b if it is a module, else a
    return own - {module}, libraries


def _longest_module(name: str, modules: set[str]) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def test_every_part_has_a_layer(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    unplaced = sorted({part_of(m) for m in graph} - set(RANK))
    assert not unplaced, f"give these parts of whisper_mcp a layer in LAYERS: {unplaced}"


def test_no_import_runs_up_or_sideways(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    wrong = [
        f"{module} imports {target} ({part_of(module)} may not import {part_of(target)})"
        for module, (targets, _) in sorted(graph.items())
        for target in sorted(targets)
        if part_of(module) != part_of(target) and RANK[part_of(target)] >= RANK[part_of(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_client_never_imports_inference_libraries(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    for module, (_, libraries) in sorted(graph.items()):
        banned = libraries & FORBIDDEN_LIBRARIES.get(part_of(module), set())
        assert not banned, f"{module} imports {sorted(banned)}"


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            found = visit(target, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_no_import_circle(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    found = circle({module: targets for module, (targets, _) in graph.items()})
    assert found is None, "import circle: " + " -> ".join(found or ())


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The reader finds every spelling, and a circle is found, so the checks above can fail."""
    source = tmp_path / "whisper_mcp" / "engines" / "m.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import torch\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from whisper_mcp.server import service\n"
        "from ..diarization.step import x\n"
        "from . import base\n"
        "def f():\n    import whisper_mcp.client.cli as c\n"
    )
    modules = {
        "whisper_mcp.server",
        "whisper_mcp.server.service",
        "whisper_mcp.diarization.step",
        "whisper_mcp.engines",
        "whisper_mcp.engines.base",
        "whisper_mcp.client.cli",
    }
    own, libraries = imports_of(source, modules, tmp_path)
    assert own == modules - {"whisper_mcp.server", "whisper_mcp.engines"}
    assert {"torch", "typing"} <= libraries
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


# The service's collaborators, which only the app factory and the service itself touch.
COLLABORATORS = {"worker", "settings", "metrics", "queue", "engine", "uploads", "callbacks"}
TRANSPORTS = [*sorted((PACKAGE / "server" / "http").glob("*.py")), PACKAGE / "server" / "mcp.py"]


def reaches_into_service(path: Path, root: Path = ROOT) -> list[str]:
    """``service.worker.alive`` and the like in ``path``: a transport reaching past the service."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in COLLABORATORS:
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name == "service":
                found.append(f"{path.relative_to(root)}:{node.lineno}: service.{node.attr}")
    return found


def test_transports_ask_the_service(tmp_path: Path) -> None:
    assert len(TRANSPORTS) > 3
    wrong = [line for path in TRANSPORTS for line in reaches_into_service(path)]
    assert not wrong, "ask the service instead:\n" + "\n".join(wrong)
    probe = tmp_path / "transport.py"
    probe.write_text("def f(request, service):\n    return request.app.state.service.worker.alive\n")
    assert reaches_into_service(probe, tmp_path) == ["transport.py:2: service.worker"]
