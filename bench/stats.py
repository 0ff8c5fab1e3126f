"""Percentiles, units and the plain-text table the benchmark prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a real sample)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def fmt_mb(kib: int) -> str:
    return f"{kib / 1024:.1f} MB"


@dataclass
class Section:
    title: str
    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(cells)

    def render(self) -> str:
        widths = [len(h) for h in self.header]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

        def line(cells: Sequence[str]) -> str:
            first, rest = cells[0], cells[1:]
            out = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=False)]
            return "  " + "  ".join(out).rstrip()

        rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([self.title, line(self.header), rule, *map(line, self.rows)])
