"""Plain-text tables of a few rows, for metadata and the command line."""

from __future__ import annotations

from typing import Any

import polars as pl

_CELL_CHARS = 80


def markdown_table(frame: pl.DataFrame) -> str:
    """A Markdown table of a few rows, long cells cut short."""
    if frame.width == 0:
        return "(no columns)"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    rows = ("| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows())
    return header + "\n".join(rows)


def _cell(value: Any) -> str:
    text = "" if value is None else value.decode() if isinstance(value, bytes) else str(value)  # JSON columns
    return text[:_CELL_CHARS].replace("|", "\\|").replace("\n", " ")
