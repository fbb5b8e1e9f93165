"""The keyed diff between a model snapshot and what a sync last delivered."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import polars.selectors as cs

from segment_sync.diff.keyed_diff import (
    UNCHANGED,
    compute_diff,
    count_kinds,
    current_contents,
    current_rows,
    delivered_rows,
    empty_diff,
    resync_diff,
)
from segment_sync.snapshot.row_hash import (
    STORED_HASH_PREFIX,
    hash_basis,
    model_columns,
    stored_hash_name,
    with_row_hashes,
)
from segment_sync.values.row_columns import (
    AFTER,
    BEFORE,
    BEFORE_GEN,
    CONTENT,
    DELIVERED_SCHEMA,
    DIFF_SCHEMA,
    GEN,
    HASH,
    KEY,
    KIND,
    ROW,
)

SENT = ["v"]


def snapshot(rows: list[tuple[str, str | None]]) -> pl.DataFrame:
    """A model snapshot with a string key `id` and one sent column `v`."""
    return pl.DataFrame(
        {"id": [r[0] for r in rows], "v": [r[1] for r in rows]}, schema={"id": pl.String, "v": pl.String}
    )


def delivered(rows: list[tuple[str, str | None, int]]) -> pl.LazyFrame:
    """A state holding `v` per key as delivered in a generation; a None value is a tombstone."""
    live = [(k, v, g) for k, v, g in rows if v is not None]
    state = pl.concat(
        [delivered_rows(snapshot([(k, v)]), ["id"], SENT, g) for k, v, g in live]
        or [pl.DataFrame(schema=DELIVERED_SCHEMA)]
    )
    tombs = pl.DataFrame(
        {KEY: [k for k, v, _ in rows if v is None], GEN: [g for _, v, g in rows if v is None]},
        schema={KEY: pl.String, GEN: pl.Int64},
    ).with_columns(pl.lit(None, pl.String).alias(CONTENT), pl.lit(None, pl.UInt64).alias(HASH))
    return pl.concat([state, tombs.select(list(DELIVERED_SCHEMA))]).lazy()


def diff_of(rows: list[tuple[str, str | None]], state: pl.LazyFrame, **options: Any) -> pl.DataFrame:
    return compute_diff(snapshot(rows), ["id"], SENT, state, **options).collect().sort(KEY)


def as_rows(diff: pl.DataFrame) -> list[tuple[Any, ...]]:
    return list(diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows())


def j(value: str) -> str:
    return f'{{"v":"{value}"}}'


def test_first_run_everything_added() -> None:
    diff = diff_of([("2", "b"), ("1", "a")], delivered([]))
    assert as_rows(diff) == [("1", "added", None, None, j("a")), ("2", "added", None, None, j("b"))]
    assert {k: diff.schema[k] for k in DIFF_SCHEMA} == DIFF_SCHEMA
    assert diff[ROW].to_list() == [{"v": "a"}, {"v": "b"}]
    hashes = current_rows(snapshot([("1", "a"), ("2", "b")]), ["id"], SENT).collect()[HASH]
    assert diff[HASH].to_list() == hashes.to_list()


def test_added_changed_removed_unchanged() -> None:
    old = delivered([("a", "1", 1), ("b", "2", 1), ("c", "3", 2)])
    diff = diff_of([("a", "1"), ("b", "20"), ("d", "4")], old)
    assert as_rows(diff) == [
        ("b", "changed", 1, j("2"), j("20")),
        ("c", "removed", 2, j("3"), None),
        ("d", "added", None, None, j("4")),
    ]
    assert diff.filter(pl.col(KIND) == "removed")[ROW].to_list() == [None]
    assert count_kinds(diff) == {"added": 1, "changed": 1, "removed": 1}


def test_nothing_changed_is_empty() -> None:
    diff = diff_of([("a", "x"), ("b", "y")], delivered([("a", "x", 3), ("b", "y", 4)]))
    assert diff.height == 0
    assert count_kinds(diff) == {"added": 0, "changed": 0, "removed": 0}


def test_everything_removed() -> None:
    diff = diff_of([], delivered([("a", "x", 1), ("b", "y", 1)]))
    assert as_rows(diff) == [("a", "removed", 1, j("x"), None), ("b", "removed", 1, j("y"), None)]


def test_both_empty() -> None:
    assert diff_of([], delivered([])).height == 0


def test_tombstone_key_back_is_added_with_before_gen() -> None:
    diff = diff_of([("a", "new")], delivered([("a", None, 7)]))
    assert as_rows(diff) == [("a", "added", 7, None, j("new"))]


def test_tombstone_still_gone_is_not_a_change() -> None:
    assert diff_of([("b", "y")], delivered([("a", None, 7), ("b", "y", 1)])).height == 0


def test_diff_in_snapshot_order_with_removed_rows_last() -> None:
    old = delivered([("k9", "x", 1), ("k1", "x", 1), ("k5", "x", 1), ("k2", "x", 1)])
    diff = compute_diff(snapshot([("k9", "y"), ("k7", "y"), ("k1", "y"), ("k3", "y")]), ["id"], SENT, old).collect()
    assert diff.select(KEY, KIND).rows() == [
        ("k9", "changed"),
        ("k7", "added"),
        ("k1", "changed"),
        ("k3", "added"),
        ("k5", "removed"),
        ("k2", "removed"),
    ]


def test_count_kinds_exact() -> None:
    cur = [(f"a{i}", "new") for i in range(3)] + [(f"c{i}", "v2") for i in range(5)]
    old = delivered([(f"c{i}", "v1", 1) for i in range(5)] + [(f"r{i}", "v", 1) for i in range(2)])
    assert count_kinds(diff_of(cur, old)) == {"added": 3, "changed": 5, "removed": 2}


# --- hashes are a filter; contents decide -----------------------------------------------------------


def test_stale_hash_with_equal_content_is_unchanged_not_a_change() -> None:
    stale = delivered([("a", "x", 3), ("b", "y", 4)]).with_columns(pl.Series(HASH, [12345, 67890], pl.UInt64))
    diff = diff_of([("a", "x"), ("b", "z")], stale)
    assert as_rows(diff) == [("a", UNCHANGED, 3, j("x"), j("x")), ("b", "changed", 4, j("y"), j("z"))]
    assert count_kinds(diff) == {"added": 0, "changed": 1, "removed": 0}


def test_untrusted_hashes_compare_every_content() -> None:
    state = delivered([("a", "x", 3), ("b", "y", 4)])
    assert diff_of([("a", "x"), ("b", "y")], state).height == 0
    diff = diff_of([("a", "x"), ("b", "y")], state, trust_hashes=False)
    assert diff[KIND].to_list() == [UNCHANGED, UNCHANGED]


def test_hash_basis_follows_column_types_not_values() -> None:
    ints = pl.DataFrame({"id": ["a"], "v": [1]})
    assert hash_basis(ints.schema, ["v"]) == hash_basis(ints.with_columns(v=pl.lit(2, pl.Int64)).schema, ["v"])
    assert hash_basis(ints.schema, ["v"]) != hash_basis(ints.cast({"v": pl.Float64}).schema, ["v"])
    assert hash_basis(ints.schema, ["v"]) != hash_basis(ints.schema, ["v", "id"])


def test_row_hashes_stored_in_the_snapshot_are_read_not_made() -> None:
    state = delivered([("a", "x", 1), ("b", "y", 1)])
    new = snapshot([("a", "x"), ("b", "z")])
    hashed = with_row_hashes(new.lazy(), ["id"], [SENT]).collect()
    assert compute_diff(hashed, ["id"], SENT, state).collect()[KEY].to_list() == ["b"]
    # planted hashes equal to the state's hide the change: proof that the stored column is what is read
    planted = hashed.with_columns(pl.Series(stored_hash_name(new.schema, ["id"], SENT), state.collect()[HASH]))
    assert compute_diff(planted, ["id"], SENT, state).collect().height == 0


def test_stored_row_hashes_are_named_after_what_they_depend_on() -> None:
    schema = {"id": pl.String, "v": pl.String, "w": pl.Int64}
    names = {
        stored_hash_name(schema, ["id"], ["v"]),
        stored_hash_name(schema, ["id"], ["v", "w"]),
        stored_hash_name({**schema, "v": pl.Int64}, ["id"], ["v"]),
        stored_hash_name({**schema, "id": pl.Int64}, ["id"], ["v"]),
        stored_hash_name(schema, ["w"], ["v"]),
        stored_hash_name(schema, ["id", "w"], ["v"]),
    }
    assert len(names) == 6 and all(n.startswith(STORED_HASH_PREFIX) for n in names)
    assert stored_hash_name(schema, ["id"], ["v"]) == stored_hash_name(dict(schema), ["id"], ["v"])


def test_row_hashes_need_the_key_and_every_sent_column() -> None:
    frame = pl.LazyFrame({"id": ["a"], "v": ["x"]})
    assert with_row_hashes(frame, ["nope"], [["v"]]).collect_schema().names() == ["id", "v"]
    added = with_row_hashes(frame, ["id"], [["v"], ["v", "nope"]]).collect_schema()
    assert model_columns(added) == ["id", "v"] and len(added) == 3


def test_row_hashes_of_columns_named_like_patterns() -> None:
    frame = pl.DataFrame({"*": ["k1", "k2"], "^a$": [1, 2], KEY: ["x", None]})
    for sent in (["^a$"], [KEY, "^a$"], ["*", KEY]):
        hashed = with_row_hashes(frame.lazy(), ["*"], [sent]).collect()
        made = current_rows(frame, ["*"], sent).collect()[HASH]
        assert hashed[stored_hash_name(frame.schema, ["*"], sent)].to_list() == made.to_list()
        assert hashed.select(cs.by_name(model_columns(hashed.schema))).equals(frame)


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
    old = delivered_rows(run1, ["id"], sent, 1).lazy()
    assert compute_diff(run2, ["id"], sent, old).collect().height == 0
    # ... while a change in a sent column is one.
    run3 = run2.with_columns(plan=pl.when(pl.col("id") == 2).then(pl.lit("team")).otherwise(pl.col("plan")))
    diff = compute_diff(run3, ["id"], sent, old).collect()
    assert as_rows(diff) == [
        ("2", "changed", 1, '{"email":"b","plan":"pro"}', '{"email":"b","plan":"team"}'),
    ]


def test_int_and_string_key_columns_match() -> None:
    as_int = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    as_str = as_int.with_columns(pl.col("id").cast(pl.String))
    old = delivered_rows(as_str, ["id"], ["v"], 1).lazy()
    assert compute_diff(as_int, ["id"], ["v"], old).collect().height == 0


def test_a_column_type_that_encodes_alike_sends_nothing() -> None:
    """Int32 -> Int64 moves every hash but no content: rows come out unchanged, never as changes."""
    narrow = pl.DataFrame({"id": ["a", "b"], "n": [1, 2]}, schema={"id": pl.String, "n": pl.Int32})
    old = delivered_rows(narrow, ["id"], ["n"], 1).lazy()
    diff = compute_diff(narrow.cast({"n": pl.Int64}), ["id"], ["n"], old, trust_hashes=False).collect()
    assert count_kinds(diff) == {"added": 0, "changed": 0, "removed": 0}
    assert set(diff[KIND]) <= {UNCHANGED}


def test_composite_key_diff() -> None:
    snap1 = pl.DataFrame({"acc": [1, 1, 2], "user": ["a", "b", "a"], "v": [1, 2, 3]})
    old = delivered_rows(snap1, ["acc", "user"], ["v"], 1).lazy()
    snap2 = pl.DataFrame({"acc": [1, 2, 2], "user": ["a", "a", "b"], "v": [1, 30, 4]})
    diff = compute_diff(snap2, ["acc", "user"], ["v"], old).collect().sort(KEY)
    assert as_rows(diff) == [
        ('{"acc":"1","user":"b"}', "removed", 1, '{"v":2}', None),
        ('{"acc":"2","user":"a"}', "changed", 1, '{"v":3}', '{"v":30}'),
        ('{"acc":"2","user":"b"}', "added", None, None, '{"v":4}'),
    ]


def test_null_value_change_is_a_change() -> None:
    snap1 = pl.DataFrame({"id": [1], "plan": ["pro"]})
    snap2 = pl.DataFrame({"id": [1], "plan": [None]}, schema={"id": pl.Int64, "plan": pl.String})
    old = delivered_rows(snap1, ["id"], ["plan"], 3).lazy()
    diff = compute_diff(snap2, ["id"], ["plan"], old).collect()
    assert as_rows(diff) == [("1", "changed", 3, '{"plan":"pro"}', '{"plan":null}')]


def test_delivered_from_parquet_and_snapshot_scanned(tmp_path: Path) -> None:
    state, snap = tmp_path / "delivered.parquet", tmp_path / "snapshot.parquet"
    delivered([("a", "x", 1), ("b", None, 2)]).collect().write_parquet(state)
    snapshot([("a", "y"), ("b", "z")]).write_parquet(snap)
    diff = compute_diff(pl.scan_parquet(snap), ["id"], SENT, pl.scan_parquet(state)).collect().sort(KEY)
    assert as_rows(diff) == [("a", "changed", 1, j("x"), j("y")), ("b", "added", 2, None, j("z"))]


def test_diff_streams_into_parquet(tmp_path: Path) -> None:
    path = tmp_path / "diff.parquet"
    compute_diff(
        snapshot([("a", "y"), ("c", "w")]), ["id"], SENT, delivered([("a", "x", 1), ("b", "q", 1)])
    ).sink_parquet(path, engine="streaming")
    assert as_rows(pl.read_parquet(path).sort(KEY)) == [
        ("a", "changed", 1, j("x"), j("y")),
        ("b", "removed", 1, j("q"), None),
        ("c", "added", None, None, j("w")),
    ]


def test_resync_sends_every_row_with_the_generation() -> None:
    diff = resync_diff(snapshot([("b", "y"), ("a", "x")]), ["id"], SENT, 9).collect().sort(KEY)
    assert as_rows(diff) == [("a", "added", 9, None, j("x")), ("b", "added", 9, None, j("y"))]
    assert diff[ROW].to_list() == [{"v": "x"}, {"v": "y"}]


def test_empty_diff_has_the_row_struct() -> None:
    empty = empty_diff(snapshot([]).schema, SENT)
    assert empty.height == 0
    assert empty.schema[ROW] == pl.Struct({"v": pl.String})


def test_user_columns_named_like_the_diffs_own() -> None:
    names = ["_key", "_hash", "_kind", "_row", "_before", "_after", "_content", "_gen"]
    run1 = pl.DataFrame({"id": ["a", "b"], **{n: [f"{n}1", f"{n}2"] for n in names}})
    old = delivered_rows(run1, ["id"], names, 1).lazy()
    run2 = run1.with_columns(pl.when(pl.col("id") == "b").then(pl.lit("new")).otherwise(pl.col("_kind")).alias("_kind"))
    diff = compute_diff(run2, ["id"], names, old).collect()
    assert diff.select(KEY, KIND).rows() == [("b", "changed")]
    assert diff[ROW].to_list() == [{**{n: f"{n}2" for n in names}, "_kind": "new"}]
    assert diff[AFTER][0].startswith('{"_key":"_key2","_hash":"_hash2","_kind":"new"')


def test_many_candidates_are_worked_out_in_slices_alike() -> None:
    cur = [(f"k{i:02}", "v2" if i % 3 else "v1") for i in range(40) if i % 7] + [("t1", "back")]
    old = delivered([(f"k{i:02}", "v1", 2) for i in range(40)] + [("t1", None, 5), ("t2", None, 6)])
    whole = diff_of(cur, old)
    for options in ({"in_memory_rows": 3}, {"trust_hashes": False}, {"trust_hashes": False, "in_memory_rows": 3}):
        assert diff_of(cur, old, **options).filter(pl.col(KIND) != "unchanged").equals(whole), options
    assert ("t1", "added", 5, None, j("back")) in as_rows(whole)
    assert count_kinds(whole) == {"added": 1, "changed": 22, "removed": 6}


def test_sliced_diff_keeps_its_files_in_the_work_dir_while_read(tmp_path: Path, monkeypatch: Any) -> None:
    folders: list[Path] = []
    real = tempfile.TemporaryDirectory

    def recorded(**options: Any) -> tempfile.TemporaryDirectory:
        folder = real(**options)
        folders.append(Path(folder.name))
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recorded)
    cur = [(f"k{i:02}", "new") for i in range(30)]
    old = delivered([("k00", "old", 1), ("gone", "x", 1)])
    diff = compute_diff(snapshot(cur), ["id"], SENT, old, in_memory_rows=4, work_dir=tmp_path)
    assert diff.select(KEY).head(3).collect().height == 3
    assert diff.collect().height == 31
    assert [f.parent for f in folders] == [tmp_path, tmp_path]
    assert list(tmp_path.iterdir()) == []


def test_sliced_diff_reads_like_a_frame() -> None:
    cur = [(f"k{i:02}", "new") for i in range(30)]
    diff = compute_diff(snapshot(cur), ["id"], SENT, delivered([("k00", "old", 1), ("gone", "x", 1)]), in_memory_rows=4)
    assert diff.select(pl.len()).collect().item() == 31
    assert diff.filter(pl.col(KIND) == "removed").select(KEY).collect()[KEY].to_list() == ["gone"]
    assert diff.select(KEY).head(5).collect().height == 5
    assert count_kinds(diff) == {"added": 29, "changed": 1, "removed": 1}
