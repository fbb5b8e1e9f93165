"""What the UI shows, as plain functions: the tables a model's SQL reads, previews without values, data versions."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from segment_sync.assets.snapshot_step import content_version
from segment_sync.metadata import NO_VALUES, diff_preview, event_outline, preview_table
from segment_sync.snapshot.snapshot_file import write_snapshot
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.warehouse.sql_tables import read_tables

SYNC = SyncSpec(name="t", model="m", type="identify", user_id="uid", fields={"email": "email", "plan": "plan"})


@pytest.mark.parametrize(
    ("sql", "kind", "tables"),
    [
        ("select user_id, email from users where is_active", "duckdb", ["users"]),
        (
            "select * from analytics.users u join analytics.plans p on p.id = u.plan_id",
            "postgres",
            ["analytics.plans", "analytics.users"],
        ),
        ("with recent as (select * from raw.events) select * from recent", "snowflake", ["raw.events"]),
        ("select * from `proj.ds.users`", "bigquery", ["proj.ds.users"]),
        ("select * from read_parquet('x.parquet')", "duckdb", []),
        ("select * from a where id in (select id from b)", "no-such-warehouse", ["a", "b"]),
        ("this is not sql (", None, []),
    ],
)
def test_the_tables_a_models_sql_reads(sql: str, kind: str | None, tables: list[str]) -> None:
    assert read_tables(sql, kind) == tables


def test_a_snapshot_preview_shows_keys_only_unless_values_are_asked_for() -> None:
    frame = pl.DataFrame({"id": [1], "email": ["someone@example.com"], "note": ["x" * 200]})
    hidden = preview_table(frame, ["id"], values=False)
    assert "@" not in hidden and hidden.startswith("| id |") and NO_VALUES in hidden
    shown = preview_table(frame, ["id"], values=True)
    assert "someone@example.com" in shown and "x" * 200 in shown  # in full, not cut at 80 characters


def test_a_diff_preview_names_the_changed_columns_without_their_values() -> None:
    before = orjson.dumps({"email": "a@example.com", "plan": "free", "uid": "u1"}).decode()
    after = orjson.dumps({"email": "a@example.com", "plan": "pro", "uid": "u1"}).decode()
    frame = pl.DataFrame(
        {"_key": ["1", "2"], "_kind": ["changed", "added"], "_before": [before, None], "_after": [after, after]}
    )
    hidden = diff_preview(frame, SYNC, values=False)
    assert "| 1 | changed | plan |" in hidden and "| 2 | added |  |" in hidden and "@" not in hidden
    assert "a@example.com" in diff_preview(frame, SYNC, values=True)


def test_an_events_outline_keeps_names_and_drops_values() -> None:
    event = {"type": "identify", "userId": "u1", "messageId": "m", "traits": {"email": "a@example.com", "plan": "pro"}}
    assert event_outline(event, values=False) == {
        "type": "identify",
        "messageId": "m",
        "traits": ["email", "plan"],
        "userId": "(set)",
    }
    assert event_outline(event, values=True) == event


def test_a_snapshots_version_follows_its_rows_not_their_order(tmp_path: Path) -> None:
    model = ModelSpec(name="m", table="src", primary_key="id")
    rows = pl.DataFrame({"id": [1, 2, 3], "uid": ["a", "b", "c"], "email": ["x", "y", "z"]})

    def version(frame: pl.DataFrame, name: str) -> str:
        path = tmp_path / f"{name}.parquet"
        write_snapshot([frame], path, model, [["email", "uid"]])
        return content_version(path)

    first = version(rows, "first")
    assert version(rows.reverse(), "reversed") == first
    assert version(rows.with_columns(pl.col("email").replace("y", "w")), "changed") != first
    assert version(rows.head(2), "fewer") != first
