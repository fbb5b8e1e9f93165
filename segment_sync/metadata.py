"""Small, readable Dagster metadata: previews, schemas and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.values.json_column import is_json

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


def schema_metadata(frame: pl.DataFrame) -> dict[str, Any]:
    """The snapshot's column schema as Dagster shows it."""
    columns = [dg.TableColumn(name, "json" if is_json(dtype) else str(dtype)) for name, dtype in frame.schema.items()]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def calls_table(calls: list[dict[str, Any]], limit: int = 20) -> str:
    """A compact Markdown table of a run's API calls (the first ones, then a count of the rest)."""
    if not calls:
        return "(no API calls)"
    columns = ["batch", "attempt", "status", "error", "latency_ms", "events", "bytes"]
    table = markdown_table(pl.DataFrame(calls[:limit]).select(columns))
    return table + (f"\n\n... and {len(calls) - limit} more calls" if len(calls) > limit else "")


def events_preview(outbox: Path, limit: int = 10) -> str:
    """The first events of a dry run's request bodies, as a Markdown table."""
    events: list[dict[str, Any]] = []
    with open(outbox, "rb") as f:
        for line in f:
            events += orjson.loads(line)["batch"][: limit - len(events)]
            if len(events) >= limit:
                break
    if not events:
        return "(no events)"
    rows = [
        {
            "type": e["type"],
            "event": e.get("event"),
            "userId": e.get("userId"),
            "messageId": e["messageId"],
            "payload": orjson.dumps(e).decode(),
        }
        for e in events
    ]
    return markdown_table(pl.DataFrame(rows))
