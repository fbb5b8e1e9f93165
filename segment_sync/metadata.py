"""Small, readable Dagster metadata: previews, schemas and samples.

Previews keep customers' data out of Dagster's event log: they show primary keys, kinds of change and the names
of fields, and row values only where the sync sets `preview_values` (then in full). The sync log and the dry
runs' request bodies, in the state folder, keep every detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.values.json_column import is_json

if TYPE_CHECKING:
    from segment_sync.spec import SyncSpec

_CELL_CHARS = 80
_ID_FIELDS = ("userId", "anonymousId", "groupId")
NO_VALUES = "Row values are not shown here; set `preview_values: true` on the sync to show them."


def markdown_table(frame: pl.DataFrame, *, cut: bool = True) -> str:
    """A Markdown table of a few rows, long cells cut short unless `cut` is off."""
    if frame.width == 0:
        return "(no columns)"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    rows = ("| " + " | ".join(_cell(v, cut) for v in row) + " |" for row in frame.iter_rows())
    return header + "\n".join(rows)


def _cell(value: Any, cut: bool = True) -> str:
    text = "" if value is None else value.decode() if isinstance(value, bytes) else str(value)  # JSON columns
    return (text[:_CELL_CHARS] if cut else text).replace("|", "\\|").replace("\n", " ")


def preview_table(frame: pl.DataFrame, key_columns: Sequence[str], *, values: bool) -> str:
    """A snapshot's first rows: every column in full with `values`, else only the primary key."""
    if values:
        return markdown_table(frame, cut=False)
    return markdown_table(frame.select(key_columns)) + f"\n\n{NO_VALUES}"


def diff_preview(frame: pl.DataFrame, sync: SyncSpec, *, values: bool) -> str:
    """A diff's first rows: key, change and which of the sync's compared columns changed; values only with `values`."""
    from segment_sync.values.row_columns import AFTER, BEFORE, KEY, KIND

    rows = []
    for key, kind, before, after in frame.select(KEY, KIND, BEFORE, AFTER).iter_rows():
        old, new = orjson.loads(before or "{}"), orjson.loads(after or "{}")
        changed = [c for c in sync.compared_columns if kind == "changed" and old.get(c) != new.get(c)]
        row = {"key": key, "change": kind, "changed_columns": ", ".join(changed)}
        rows.append(row | ({"before": before, "after": after} if values else {}))
    if not rows:
        return "(no changes)"
    table = markdown_table(pl.DataFrame(rows), cut=not values)
    return table if values else f"{table}\n\n{NO_VALUES}"


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


def counts_table(counts: dict[str, int], label: str) -> dg.TableMetadataValue:
    """Counts by name (events sent by type, say) as a table the UI renders."""
    schema = dg.TableSchema(columns=[dg.TableColumn(label, "string"), dg.TableColumn("count", "int")])
    records = [dg.TableRecord({label: name, "count": n}) for name, n in sorted(counts.items())]
    return dg.MetadataValue.table(records, schema=schema)


def event_outline(event: dict[str, Any], *, values: bool) -> dict[str, Any]:
    """An event as metadata shows it: in full with `values`, else its kind, name, messageId and field names."""
    if values:
        return event
    outline = {k: event[k] for k in ("type", "event", "messageId") if k in event}
    for part in ("properties", "traits"):
        if part in event:
            outline[part] = sorted(event[part])
    return outline | {k: "(set)" for k in _ID_FIELDS if event.get(k) is not None}


def events_preview(outbox: Path, *, values: bool, limit: int = 10) -> str:
    """The first events of a dry run's request bodies, as a Markdown table (values only with `values`)."""
    events: list[dict[str, Any]] = []
    with open(outbox, "rb") as f:
        for line in f:
            events += orjson.loads(line)["batch"][: limit - len(events)]
            if len(events) >= limit:
                break
    if not events:
        return "(no events)"
    rows = []
    for e in events:
        fields = sorted(e.get("properties") or e.get("traits") or {})
        row = {"type": e["type"], "event": e.get("event"), "messageId": e["messageId"], "fields": ", ".join(fields)}
        rows.append(row | ({"userId": e.get("userId"), "payload": orjson.dumps(e).decode()} if values else {}))
    table = markdown_table(pl.DataFrame(rows), cut=not values)
    return table if values else f"{table}\n\n{NO_VALUES}"
