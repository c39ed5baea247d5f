"""Markdown tables, as leaderboards, exported runs and model cards hold them."""

from __future__ import annotations

from typing import Any


def markdown_table(frame, *, digits: int | None = None) -> str:
    """A DataFrame as a Markdown table: numbers to `digits` decimals (else 6 significant digits), gaps empty, `|`
    in text escaped."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + " --- |" * len(frame.columns) + "\n"
    return header + "".join(
        "| " + " | ".join(cell(value, digits) for value in row) + " |\n" for row in frame.itertuples(index=False)
    )


def cell(value: Any, digits: int | None = None) -> str:
    """One value as a table shows it."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.6g}"
    return str(value).replace("|", "\\|")
