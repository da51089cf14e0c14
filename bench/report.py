"""A section's results (figures, notes, details) and the table they print as."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float | None
    ratio: float | None
    ratio_note: str  # what the ratio is, e.g. "value/baseline"
    target: str  # "" for information only
    met: bool | None  # None: no target

    def cells(self) -> list[str]:
        def fmt(x: float | None) -> str:
            if x is None:
                return "-"
            if self.unit in ("s",):
                return f"{x:.3f} s"
            if self.unit == "ms":
                return f"{x:.1f} ms"
            if self.unit == "MiB":
                return f"{x:.0f} MiB"
            if self.unit == "%":
                return f"{x:.1f} %"
            if self.unit == "x RT":
                return f"{x:.3f}"
            return f"{x:.2f} {self.unit}".strip()

        ratio = "-" if self.ratio is None else (f"{self.ratio:.2f}x" if self.ratio >= 0.1 else f"{self.ratio:.4f}x")
        result = "info" if self.met is None else ("met" if self.met else "NOT met")
        base = fmt(self.baseline) + (f" {self.baseline_name}" if self.baseline_name else "")
        return [self.name, fmt(self.value), base, f"{ratio} {self.ratio_note}".strip(), self.target or "-", result]


@dataclass
class Section:
    name: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    load_at_start: list[float] = field(default_factory=list)

    def add(self, *args: Any, **kw: Any) -> Figure:
        fig = Figure(*args, **kw)
        self.figures.append(fig)
        return fig


def table(sections: list[Section], titles: Mapping[str, str]) -> str:
    """Every section's figures and notes as one aligned table; ``titles``: section name -> heading."""
    header = ["figure", "value", "baseline", "ratio", "target", "result"]
    rows: list[list[str] | str] = []
    for sec in sections:
        rows.append(f"== {titles[sec.name]}  [{sec.name}, {sec.seconds:.0f} s, load {sec.load_at_start[0]:.2f}]")
        if sec.error:
            rows.append(f"   ERROR: {sec.error.strip().splitlines()[-1]}")
        for fig in sec.figures:
            rows.append(fig.cells())
        for note in sec.notes:
            rows.append(f"   note: {note}")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows if isinstance(r, list)]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append(r if isinstance(r, str) else "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(out)
