"""The HTTP benchmark's table: every repeat's value of each figure, printed as median (min–max)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bench.common import spread

# name: (format, scale, unit); ratios and shares are kept as fractions and shown as percentages
FORMATS = {"rate": ("{:.1f}", 1.0, ""), "ratio": ("{:.1f}", 100.0, " %"), "p50": ("{:.1f}", 1.0, ""),
           "p99": ("{:.1f}", 1.0, ""), "drain": ("{:.1f}", 1.0, " s"), "confirmed": ("{:.0f}", 1.0, ""),
           "client_cpu": ("{:.0f}", 100.0, " % of a core")}
NOTES = {"drain": "drain", "confirmed": "confirmed", "client_cpu": "client CPU"}


@dataclasses.dataclass
class Row:
    label: str
    concurrency: int
    figures: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    failed: int = 0  # non-2xx responses and socket errors, over all repeats

    def cell(self, name: str) -> str:
        fmt, scale, unit = FORMATS[name]
        return spread([v * scale for v in self.figures.get(name, [])], fmt, unit)

    def notes(self) -> str:
        notes = [f"{label} {self.cell(name)}" for name, label in NOTES.items() if name in self.figures]
        if self.failed:
            notes.append(f"**{self.failed} failed requests** (non-2xx or socket errors, all repeats)")
        return "; ".join(notes)


class Report:
    """Rows in the order of ``labels``, then of the concurrencies as given."""

    def __init__(self, labels: Sequence[str], concurrencies: Sequence[int]) -> None:
        self.rows = {(label, c): Row(label, c) for label in labels for c in concurrencies}

    def add(self, label: str, concurrency: int, failed: int = 0, **figures: float) -> None:
        row = self.rows[(label, concurrency)]
        row.failed += failed
        for name, value in figures.items():
            row.figures.setdefault(name, []).append(value)

    def markdown(self) -> str:
        lines = ["| measure | c | rate (/s) | p50 (ms) | p99 (ms) | notes |", "|---|---|---|---|---|---|"]
        for row in self.rows.values():
            if not row.figures:
                continue
            rate = row.cell("rate") or row.cell("ratio")
            lines.append(f"| {row.label} | {row.concurrency} | {rate} | {row.cell('p50')} | {row.cell('p99')} "
                         f"| {row.notes()} |")
        return "\n".join(lines)
