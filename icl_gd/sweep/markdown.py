"""The one markdown-table writer of the sweep (comparison.md and report.md): number formats, columns, sections.

A table is a list of columns, each a header and a function from a row to its cell, so every table of both files
goes through `md_table` and formats its numbers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icl_gd import io

DIGITS = 3
MISSING = "—"  # the cell of a value that is missing (NaN, or a merge left none)

Column = tuple[str, Callable[[pd.Series], str]]  # (header, row -> cell)


def fmt(v: Any) -> str:
    """A number to DIGITS decimals ('—' for missing); other values as text."""
    if isinstance(v, float | np.floating):
        return MISSING if math.isnan(v) else f"{v:.{DIGITS}f}"
    return str(v)


def fmt_pm(mean: Any, half: Any, missing: str = MISSING) -> str:
    """'0.350 ± 0.159' from a mean and a half-width; the mean alone without a half-width, `missing` without a mean."""
    if mean is None or pd.isna(mean):
        return missing
    return fmt(mean) if half is None or pd.isna(half) else f"{fmt(mean)} ± {fmt(half)}"


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    """'0.350 ± 0.159' (the half-width of the 95% interval); the mean alone when there is no interval."""
    return fmt_pm(mean, (hi - lo) / 2)


def fmt_count(v: Any) -> str:
    """A count as an integer ('—' for missing: a merge left no value)."""
    return MISSING if v is None or pd.isna(v) else str(int(v))


def text(col: str, header: str | None = None) -> Column:
    """The column's value as text."""
    return header or col, lambda r: str(r[col])


def count(col: str, header: str | None = None) -> Column:
    """The column's value as a count (`fmt_count`)."""
    return header or col, lambda r: fmt_count(r.get(col))


def number(col: Any, header: str | None = None) -> Column:
    """The column's value as a number (`fmt`)."""
    return header or str(col), lambda r: fmt(r[col])


def with_ci(col: str, header: str | None = None) -> Column:
    """mean ± half-width from columns col / col_lo / col_hi (or mean / lo / hi when col is "mean")."""
    lo, hi = ("lo", "hi") if col == "mean" else (f"{col}_lo", f"{col}_hi")
    return header or col, lambda r: fmt_ci(r[col], r[lo], r[hi]) if col in r else MISSING


def with_half_width(col: str, header: str | None = None, missing: str = MISSING) -> Column:
    """mean ± half-width from columns col / col_ci (a table of `tables.with_half_widths`)."""
    return header or col, lambda r: fmt_pm(r.get(col), r.get(f"{col}_ci"), missing)


def escape_cell(cell: str) -> str:
    """A cell's text with its pipes escaped, so that '|Δw| / max|Δw|' stays one cell of a markdown table."""
    return cell.replace("|", r"\|")


def md_table(table: pd.DataFrame, columns: list[Column]) -> str:
    """A markdown table with one row per table row, each column's cell from its function (pipes escaped)."""
    lines = ["| " + " | ".join(escape_cell(h) for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(escape_cell(cell(r)) for _, cell in columns) + " |" for _, r in table.iterrows()
    ]
    return "\n".join(lines) + "\n"


def section(title: str, how_to_read: str, body: str, figure: Path | None) -> str:
    """A report section: its figure (relative link), one sentence on how to read it, then its table."""
    fig = f"![{title}]({io.FIGURES}/{figure.name})\n\n" if figure else ""
    return f"## {title}\n\n{fig}{how_to_read}\n\n{body}\n"
