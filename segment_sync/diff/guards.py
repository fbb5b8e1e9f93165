"""Guards before sending: a change too large to be real, or a sent column that changed its kind of value."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from segment_sync.spec import SyncSpec
from segment_sync.values.json_column import is_json


def change_size_problems(
    sync: SyncSpec, counts: Mapping[str, int], delivered_rows: int, pending: Mapping[str, int]
) -> list[str]:
    """Why a diff is too large to send for a sync that already has state; empty when it is within limits.

    Rows the last run tried and could not deliver (`pending`) are retries, not new changes, so they do not count.
    """
    problems = []
    limits = (
        ("removed", sync.max_removed_percent, "the model may be broken, empty or filtered by mistake"),
        ("added", sync.max_added_percent, "a primary key that changed type or format looks like this"),
    )
    for kind, limit, hint in limits:
        rows = max(counts[kind] - pending.get(kind, 0), 0)
        if rows >= sync.guard_min_rows and rows > delivered_rows * limit / 100:
            share = rows / delivered_rows * 100 if delivered_rows else float("inf")
            problems.append(
                f"{rows:,} rows would be newly {kind}, {share:,.0f}% of the {delivered_rows:,} rows last delivered "
                f"(max_{kind}_percent is {limit:g}); {hint}"
            )
    return problems


def column_kind(dtype: pl.DataType) -> str:
    """The kind of JSON value a column becomes: types that encode alike share a kind."""
    if dtype == pl.Null:
        return "null"
    if is_json(dtype):
        return "json"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Decimal):
        return "decimal"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    for kind, types in (("boolean", pl.Boolean), ("date", pl.Date), ("time", pl.Time)):
        if dtype == types:
            return kind
    if isinstance(dtype, pl.Duration):
        return "duration"
    if isinstance(dtype, pl.List | pl.Array):
        return "list"
    if isinstance(dtype, pl.Struct):
        return "struct"
    return str(dtype)


READ_AS_JSON_SINCE = {("decimal", "json")}  # numerics are read as the warehouse's JSON numbers: the same text


def column_kinds(schema: Mapping[str, pl.DataType], columns: list[str]) -> dict[str, str]:
    """The kind of each of the given columns."""
    return {c: column_kind(schema[c]) for c in columns}


def kind_changes(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> list[str]:
    """Sent columns whose kind of value changed since the last delivery (an all-null column matches any kind)."""
    if not previous:
        return []
    return [
        f"column {column!r} changed from {previous[column]} to {kind}: every row would look changed"
        for column, kind in current.items()
        if column in previous
        and "null" not in (kind, previous[column])
        and kind != previous[column]
        and (previous[column], kind) not in READ_AS_JSON_SINCE
    ]
