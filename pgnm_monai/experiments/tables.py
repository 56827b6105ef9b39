"""Tables as text: Markdown tables of rows or data frames, and numbers read from a metrics report.

Used by every job that writes a table (the main job, ``pgnm finetune``, the protocol and its reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["format_table", "markdown_table", "number"]


def number(value: Any) -> float:
    """``value`` as ``float`` (``None`` -> NaN)."""
    return float("nan") if value is None else float(value)


def _cell(v: Any, column: str = "") -> str:
    if column == "seconds" and v is not None:
        return f"{float(v):.0f}"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return "" if v is None else str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` (floats to 3 decimals, ``seconds`` to whole seconds)."""
    cells = [{c: _cell(r.get(c), c) for c in columns} for r in rows]
    return markdown_table(pd.DataFrame(cells, columns=list(columns)))


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table (a non-default index becomes columns)."""
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
