"""The keyed diff between a model snapshot and what a sync last delivered."""

from __future__ import annotations

from typing import Any

import polars as pl

from segment_sync.diff import (
    AFTER,
    BEFORE,
    BEFORE_GEN,
    CONTENT,
    DELIVERED_SCHEMA,
    DIFF_SCHEMA,
    GEN,
    KEY,
    KIND,
    compute_diff,
    count_kinds,
    current_contents,
)


def delivered(rows: list[tuple[str, str | None, int]]) -> pl.LazyFrame:
    return pl.DataFrame(
        {KEY: [r[0] for r in rows], CONTENT: [r[1] for r in rows], GEN: [r[2] for r in rows]},
        schema=DELIVERED_SCHEMA,
    ).lazy()


def current(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {KEY: [r[0] for r in rows], CONTENT: [r[1] for r in rows]}, schema={KEY: pl.String, CONTENT: pl.String}
    )


def as_rows(diff: pl.DataFrame) -> list[tuple[Any, ...]]:
    return list(diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows())


def test_first_run_everything_added() -> None:
    diff = compute_diff(current([("2", "b"), ("1", "a")]), delivered([]))
    assert as_rows(diff) == [("1", "added", None, None, "a"), ("2", "added", None, None, "b")]
    assert dict(diff.schema) == DIFF_SCHEMA


def test_added_changed_removed_unchanged() -> None:
    cur = current([("a", '{"v":1}'), ("b", '{"v":20}'), ("d", '{"v":4}')])
    old = delivered([("a", '{"v":1}', 1), ("b", '{"v":2}', 1), ("c", '{"v":3}', 2)])
    diff = compute_diff(cur, old)
    assert as_rows(diff) == [
        ("b", "changed", 1, '{"v":2}', '{"v":20}'),
        ("c", "removed", 2, '{"v":3}', None),
        ("d", "added", None, None, '{"v":4}'),
    ]
    assert count_kinds(diff) == {"added": 1, "changed": 1, "removed": 1}


def test_nothing_changed_is_empty() -> None:
    cur = current([("a", "x"), ("b", "y")])
    diff = compute_diff(cur, delivered([("a", "x", 3), ("b", "y", 4)]))
    assert diff.height == 0
    assert dict(diff.schema) == DIFF_SCHEMA
    assert count_kinds(diff) == {"added": 0, "changed": 0, "removed": 0}


def test_everything_removed() -> None:
    diff = compute_diff(current([]), delivered([("a", "x", 1), ("b", "y", 1)]))
    assert as_rows(diff) == [("a", "removed", 1, "x", None), ("b", "removed", 1, "y", None)]


def test_both_empty() -> None:
    diff = compute_diff(current([]), delivered([]))
    assert diff.height == 0
    assert dict(diff.schema) == DIFF_SCHEMA


def test_tombstone_key_back_is_added_with_before_gen() -> None:
    cur = current([("a", "new")])
    diff = compute_diff(cur, delivered([("a", None, 7)]))
    assert as_rows(diff) == [("a", "added", 7, None, "new")]


def test_tombstone_still_gone_is_not_a_change() -> None:
    diff = compute_diff(current([("b", "y")]), delivered([("a", None, 7), ("b", "y", 1)]))
    assert diff.height == 0


def test_sorted_by_key() -> None:
    keys = ["k9", "k1", "k5", "k3"]
    diff = compute_diff(current([(k, "x") for k in keys]), delivered([]))
    assert diff[KEY].to_list() == sorted(keys)


def test_count_kinds_exact() -> None:
    cur = current([(f"a{i}", "new") for i in range(3)] + [(f"c{i}", "v2") for i in range(5)])
    old = delivered([(f"c{i}", "v1", 1) for i in range(5)] + [(f"r{i}", "v", 1) for i in range(2)])
    assert count_kinds(compute_diff(cur, old)) == {"added": 3, "changed": 5, "removed": 2}


# --- from snapshots --------------------------------------------------------------------------------


def test_current_contents_only_sent_columns() -> None:
    snap = pl.DataFrame({"id": [1, 2], "email": ["a@x", "b@x"], "secret": ["s1", "s2"]})
    out = current_contents(snap, ["id"], ["email", "id"])
    assert out.to_dicts() == [
        {KEY: "1", CONTENT: '{"email":"a@x","id":1}'},
        {KEY: "2", CONTENT: '{"email":"b@x","id":2}'},
    ]


def test_change_in_unsent_column_is_not_a_change() -> None:
    sent = ["email", "plan"]
    run1 = pl.DataFrame({"id": [1, 2], "email": ["a", "b"], "plan": ["free", "pro"], "last_login": ["x", "y"]})
    run2 = run1.with_columns(last_login=pl.lit("changed"))
    first = current_contents(run1, ["id"], sent)
    old = first.with_columns(pl.lit(1, dtype=pl.Int64).alias(GEN)).lazy()
    assert compute_diff(current_contents(run2, ["id"], sent), old).height == 0
    # ... while a change in a sent column is one.
    run3 = run2.with_columns(plan=pl.when(pl.col("id") == 2).then(pl.lit("team")).otherwise(pl.col("plan")))
    diff = compute_diff(current_contents(run3, ["id"], sent), old)
    assert as_rows(diff) == [
        ("2", "changed", 1, '{"email":"b","plan":"pro"}', '{"email":"b","plan":"team"}'),
    ]


def test_int_and_string_key_columns_match() -> None:
    as_int = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    as_str = as_int.with_columns(pl.col("id").cast(pl.String))
    old = current_contents(as_str, ["id"], ["v"]).with_columns(pl.lit(1, dtype=pl.Int64).alias(GEN)).lazy()
    assert compute_diff(current_contents(as_int, ["id"], ["v"]), old).height == 0


def test_composite_key_diff() -> None:
    snap1 = pl.DataFrame({"acc": [1, 1, 2], "user": ["a", "b", "a"], "v": [1, 2, 3]})
    old = current_contents(snap1, ["acc", "user"], ["v"]).with_columns(pl.lit(1, dtype=pl.Int64).alias(GEN)).lazy()
    snap2 = pl.DataFrame({"acc": [1, 2, 2], "user": ["a", "a", "b"], "v": [1, 30, 4]})
    diff = compute_diff(current_contents(snap2, ["acc", "user"], ["v"]), old)
    assert as_rows(diff) == [
        ('{"acc":"1","user":"b"}', "removed", 1, '{"v":2}', None),
        ('{"acc":"2","user":"a"}', "changed", 1, '{"v":3}', '{"v":30}'),
        ('{"acc":"2","user":"b"}', "added", None, None, '{"v":4}'),
    ]


def test_null_value_change_is_a_change() -> None:
    snap1 = pl.DataFrame({"id": [1], "plan": ["pro"]})
    snap2 = pl.DataFrame({"id": [1], "plan": [None]}, schema={"id": pl.Int64, "plan": pl.String})
    old = current_contents(snap1, ["id"], ["plan"]).with_columns(pl.lit(3, dtype=pl.Int64).alias(GEN)).lazy()
    diff = compute_diff(current_contents(snap2, ["id"], ["plan"]), old)
    assert as_rows(diff) == [("1", "changed", 3, '{"plan":"pro"}', '{"plan":null}')]


def test_delivered_from_parquet(tmp_path: Any) -> None:
    path = tmp_path / "delivered.parquet"
    delivered([("a", "x", 1), ("b", None, 2)]).collect().write_parquet(path)
    diff = compute_diff(current([("a", "y"), ("b", "z")]), pl.scan_parquet(path))
    assert as_rows(diff) == [("a", "changed", 1, "x", "y"), ("b", "added", 2, None, "z")]
