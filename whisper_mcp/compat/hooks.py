"""What a borrowed hook is, and how one is checked against the installed library.

A ``Hook`` names the private names of a library that one of whisper-mcp's
features leans on (``needs``), what the feature gives, and what runs instead
when a name is gone: a public path (``instead``), or nothing, and then the
service does not start (``instead=None``). ``examine`` looks each name up in
the installed library and gives a ``Check``: the version found, and the hooks
whose names are gone.

A name is written ``module:Attr.attr``, with two additions:

* ``module:Class.method(self, a, b)``: and its parameters are these (an
  override is called with them);
* ``module:thing[name]``: ``thing``'s code uses ``name`` (a local variable, or
  an attribute it reads or sets); for a class, its ``__init__``'s code, so
  ``Class[attr]`` is an attribute every instance gets.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class IncompatibleLibrary(Exception):  # noqa: N818 - reads as what it reports
    """An installed library lacks a name a hook needs, and the hook has no
    public path to fall back to: the service must not start."""


@dataclass(frozen=True)
class Hook:
    name: str  # as messages and /health name it
    gives: str  # what whisper-mcp gets from it
    needs: tuple[str, ...]  # the library's names it relies on (see the module's docstring)
    instead: str | None = None  # the public path taken without it; None: start-up stops


@dataclass(frozen=True)
class Lost:
    """A hook whose names are gone from the installed library."""

    hook: Hook
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """One library's hooks against its installed version."""

    library: str  # its distribution name
    written_for: str
    found: str | None  # the installed version; None: not installed (nothing to hook)
    lost: tuple[Lost, ...] = ()
    names_checked: bool = True  # False: version only (the library is imported later)

    def has(self, hook: str) -> bool:
        """Whether ``hook`` can be used: all its names are present."""
        return all(lost.hook.name != hook for lost in self.lost)

    @property
    def fatal(self) -> tuple[Lost, ...]:
        return tuple(lost for lost in self.lost if lost.hook.instead is None)

    @property
    def fallbacks(self) -> tuple[Lost, ...]:
        return tuple(lost for lost in self.lost if lost.hook.instead is not None)

    def message(self, lost: Lost) -> str:
        gone = ", ".join(f"`{display(name)}`" for name in lost.missing)
        said = (
            f"{self.library} {self.found} is installed, but whisper-mcp's hook `{lost.hook.name}` "
            f"({lost.hook.gives}) was written for {self.written_for} and {gone} "
            f"{'is' if len(lost.missing) == 1 else 'are'} gone or changed"
        )
        if lost.hook.instead is None:
            return f"{said}: install {self.library}=={self.written_for}"
        return f"{said}; instead: {lost.hook.instead}"

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise IncompatibleLibrary("; ".join(self.message(lost) for lost in self.fatal))

    def log(self, log: logging.Logger) -> None:
        """Warn of each fallback, or of a version other than the one written for."""
        for lost in self.fallbacks:
            log.warning("%s (listed under compat in /health)", self.message(lost))
        if self.found is not None and self.found != self.written_for and not self.lost:
            log.warning(
                "%s %s is installed; whisper-mcp's hooks into it were written for %s. %s",
                self.library,
                self.found,
                self.written_for,
                "Every name they rely on is present, so they are used."
                if self.names_checked
                else "The names they rely on are checked when it is first loaded.",
            )

    def health(self) -> list[dict[str, Any]]:
        """The fallbacks, as /health lists them under ``compat``."""
        return [
            {
                "library": self.library,
                "version": self.found,
                "written_for": self.written_for,
                "hook": lost.hook.name,
                "missing": [display(name) for name in lost.missing],
                "lost": lost.hook.gives,
                "instead": lost.hook.instead,
            }
            for lost in self.fallbacks
        ]


@dataclass(frozen=True)
class Library:
    """A library whisper-mcp hooks into: its distribution, the version the hooks were written for, the hooks."""

    name: str
    written_for: str
    hooks: tuple[Hook, ...] = ()

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def check_version(self) -> Check:
        """The installed version alone: nothing imported."""
        return Check(self.name, self.written_for, self.version(), names_checked=False)

    def examine(self, found: str | None = None) -> Check:
        """Every hook's names looked up in the installed library (imported
        here); ``found``: the version to report, if not the installed one."""
        found = found if found is not None else self.version()
        if found is None:
            return Check(self.name, self.written_for, None)
        lost = []
        for hook in self.hooks:
            missing = tuple(name for name in hook.needs if not present(name))
            if missing:
                lost.append(Lost(hook, missing))
        return Check(self.name, self.written_for, found, tuple(lost))


def present(name: str) -> bool:
    """Whether ``name`` (``module:path``, see the module's docstring) is in the installed library."""
    module_name, _, path = name.partition(":")
    path, _, rest = path.partition("(")
    path, _, used = path.partition("[")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return False  # the module itself, or its package, is gone
        raise  # one of its own imports is: a broken install, not a renamed hook
    for part in path.split(".") if path else ():
        try:
            # A module's own lookup (some resolve names lazily); a class's without running descriptors.
            target = (
                getattr(target, part) if isinstance(target, types.ModuleType) else inspect.getattr_static(target, part)
            )
        except AttributeError:
            return False
        if isinstance(target, staticmethod | classmethod):
            target = target.__func__
    if rest:
        wanted = [p.strip() for p in rest.rstrip(")").split(",") if p.strip()]
        try:
            parameters = list(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            return False
        if parameters[: len(wanted)] != wanted:
            return False
    if used:
        code = _code(target)
        return code is not None and used.rstrip("]") in set(_names(code))
    return True


def display(name: str) -> str:
    """``name`` as messages show it: ``module.path``, with its parameters if
    given; ``x in module.f`` for ``module:f[x]``."""
    module, _, path = name.partition(":")
    path, bracket, used = path.partition("[")
    dotted = f"{module}.{path}" if path else module
    return f"{used.rstrip(']')} in {dotted}" if bracket else dotted


def _code(target: Any) -> types.CodeType | None:
    if isinstance(target, type):
        target = inspect.getattr_static(target, "__init__", None)
    target = inspect.unwrap(target) if callable(target) else target
    return getattr(target, "__code__", None)


def _names(code: types.CodeType) -> Iterator[str]:
    """Every name ``code`` uses, its nested functions' and comprehensions' included."""
    yield from code.co_names
    yield from code.co_varnames
    yield from code.co_cellvars
    yield from code.co_freevars
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def report(checks: Sequence[Check], log: logging.Logger) -> None:
    """Stop on every fatal mismatch at once, else log the fallbacks and version drift."""
    fatal = [check.message(lost) for check in checks for lost in check.fatal]
    if fatal:
        raise IncompatibleLibrary("; ".join(fatal))
    for check in checks:
        check.log(log)


__all__ = ["Check", "Hook", "IncompatibleLibrary", "Library", "Lost", "display", "present", "report"]
