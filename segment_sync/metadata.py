"""Small, readable Dagster metadata: previews, schemas and samples."""

from __future__ import annotations

from typing import Any

import dagster as dg
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
    text = "" if value is None else str(value)
    return text[:_CELL_CHARS].replace("|", "\\|").replace("\n", " ")


def schema_metadata(frame: pl.DataFrame) -> dict[str, Any]:
    """The snapshot's column schema as Dagster shows it."""
    columns = [dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}
