"""Markdown tables for people (metrics.md, the reproduction summary, Table 7): every number is
rounded here, once, so no table prints 0.270854144; the CSV and JSON files keep every digit."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SIGNIFICANT = 3  # figures kept where a column has no fixed number of decimals


def cell(value: Any, decimals: int | None = None, missing: str = "-") -> str:
    """A value as a table cell: a float with `decimals` places (metrics in [0, 1], so a column
    lines up), else with 3 significant figures but never fewer than its integer digits (0.271,
    5.40, 198, 1230); None and NaN read `missing`; anything else as str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if not isinstance(value, float) or math.isinf(value):
        return str(value)
    if decimals is None:
        magnitude = math.floor(math.log10(abs(value))) if value else 0
        decimals = max(0, SIGNIFICANT - 1 - magnitude)
    return f"{value:.{decimals}f}"


def noted(text: str, note: str) -> str:
    """A cell with its caveat beside it, so the number is never copied without it."""
    return f"{text} ({note})" if note else text


def note_column(header: str, cells: list[str], notes: list[str]) -> tuple[str, list[str]]:
    """A column's caveats: once in the header when every row has the same one (one impostor count
    for the whole table), else beside each cell that has one."""
    if notes and all(notes) and len(set(notes)) == 1:
        return noted(header, notes[0]), cells
    return header, [noted(c, n) for c, n in zip(cells, notes)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table of already formatted cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
