"""Snapshot files: streamed from batches, schema-relaxed, deduplicated by policy, replaced atomically."""

from __future__ import annotations

import collections
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_sync.alerts.settings import AlertSettings
from segment_sync.diff.keyed_diff import current_rows
from segment_sync.factory import build_definitions
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.snapshot.key_checks import SAMPLE_SIZE, key_problems, rows_to_drop
from segment_sync.snapshot.row_hash import STORED_HASH_PREFIX, stored_hash_name
from segment_sync.snapshot.snapshot_file import SnapshotError, scan_snapshot, write_snapshot
from segment_sync.spec import LogSettings, ModelSpec, ProjectSpec
from segment_sync.values.row_columns import HASH
from segment_sync.warehouse.warehouse_error import WarehouseError
from segment_sync_tests.support.sync_runs import TRACK, make_definitions, run_sync
from segment_sync_tests.support.warehouses import Warehouse

FAIL = ModelSpec(name="m", table="src", primary_key="id")


def _policy(policy: str) -> ModelSpec:
    return ModelSpec(name="m", table="src", primary_key="id", on_duplicate_key=policy, order_by="seq")


def test_batches_of_different_dtypes_are_relaxed_to_one_schema(tmp_path):
    path = tmp_path / "m.parquet"
    frames = [
        pl.DataFrame({"id": [1, 2], "v": [None, None], "n": [1, 2]}),  # SQLAlchemy infers Null for an all-null batch
        pl.DataFrame({"id": [3], "v": ["x"], "n": [2.5]}),
    ]
    summary = write_snapshot(frames, path, FAIL)
    written = pl.read_parquet(path)
    assert summary.rows == 3 and written.schema == pl.Schema({"id": pl.Int64, "v": pl.String, "n": pl.Float64})
    assert written.rows() == [(1, None, 1.0), (2, None, 2.0), (3, "x", 2.5)]
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no batch or temporary file left behind


@pytest.mark.parametrize("one_schema", [False, True])
def test_batches_are_written_as_they_arrive_not_held(one_schema, tmp_path):
    alive: list[weakref.ref] = []

    def batches() -> Iterator[pl.DataFrame]:
        for i in range(5):
            gc.collect()
            # The writer may still hold the batch it just wrote, never the ones before it.
            assert all(ref() is None for ref in alive[:-1]), "earlier batches are still held in memory"
            frame = pl.DataFrame({"id": range(i * 1000, (i + 1) * 1000), "v": ["x" * 50] * 1000})
            alive.append(weakref.ref(frame))
            yield frame
            del frame

    assert write_snapshot(batches(), tmp_path / "m.parquet", FAIL, one_schema=one_schema).rows == 5000
    assert pl.scan_parquet(tmp_path / "m.parquet").select(pl.len()).collect().item() == 5000


@pytest.mark.parametrize("one_schema", [False, True])
def test_missing_key_column_keeps_the_old_snapshot(one_schema, tmp_path):
    path = tmp_path / "m.parquet"
    write_snapshot([pl.DataFrame({"id": [1]})], path, FAIL, one_schema=one_schema)
    with pytest.raises(SnapshotError, match=r"model 'm': the query returns no column \['id'\]"):
        write_snapshot([pl.DataFrame({"ident": [2]})], path, FAIL, one_schema=one_schema)
    assert pl.read_parquet(path)["id"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


@pytest.mark.parametrize("one_schema", [False, True])
def test_a_read_failing_midway_keeps_the_old_snapshot(one_schema, tmp_path):
    path = tmp_path / "m.parquet"
    write_snapshot([pl.DataFrame({"id": [1]})], path, FAIL, one_schema=one_schema)

    def failing() -> Iterator[pl.DataFrame]:
        yield pl.DataFrame({"id": [2]})
        raise WarehouseError("model 'm': reading from duckdb:///w.duckdb failed: connection lost.")

    with pytest.raises(WarehouseError, match="connection lost"):
        write_snapshot(failing(), path, FAIL, one_schema=one_schema)
    assert pl.read_parquet(path)["id"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_keep_policy_needs_its_order_column(tmp_path):
    with pytest.raises(SnapshotError, match=r"\['seq'\]"):
        write_snapshot([pl.DataFrame({"id": [1, 1]})], tmp_path / "m.parquet", _policy("keep_last"))


SNAPSHOT = pl.DataFrame(
    {
        "id": [1, 2, 1, None, 3, 1, 2, 3],
        "seq": [5, 1, None, 7, 2, 9, 1, 2],
        "v": ["1a", "2a", "1b", "null-key", "3a", "1c", "2b", "3b"],
    }
)


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        # Ordered by seq with nulls last, then by position: keep_first takes the lowest seq, keep_last the null.
        ("keep_first", ["1a", "2a", "null-key", "3a"]),
        ("keep_last", ["2b", "1b", "null-key", "3b"]),
    ],
)
@pytest.mark.parametrize("one_schema", [False, True])
def test_duplicate_policy_keeps_one_row_per_key_in_file_order(one_schema, tmp_path, policy, kept):
    path = tmp_path / "m.parquet"
    summary = write_snapshot(SNAPSHOT.iter_slices(3), path, _policy(policy), one_schema=one_schema)
    written = pl.read_parquet(path)
    assert sorted(written["v"].to_list()) == sorted(kept)
    assert written["v"].to_list() == [v for v in SNAPSHOT["v"] if v in kept]  # file order is kept
    assert (summary.rows, summary.dropped_rows, summary.dropped_samples) == (4, 4, ["1", "2", "3"])
    assert (summary.problems.duplicate_keys, summary.problems.null_rows) == (0, 1)


@pytest.mark.parametrize("one_schema", [False, True])
def test_fail_policy_writes_every_row_and_reports_duplicates(one_schema, tmp_path):
    summary = write_snapshot([SNAPSHOT], tmp_path / "m.parquet", FAIL, one_schema=one_schema)
    assert summary.rows == 8 and summary.dropped_rows == 0
    assert (summary.problems.duplicate_keys, summary.problems.duplicate_samples) == (3, ["1", "2", "3"])
    assert pl.read_parquet(tmp_path / "m.parquet").equals(SNAPSHOT)


def test_key_checks_agree_on_frames_and_lazy_files(tmp_path):
    SNAPSHOT.write_parquet(tmp_path / "s.parquet")
    composite = ["id", "seq"]
    for keys in (["id"], composite):
        assert key_problems(SNAPSHOT, keys) == key_problems(pl.scan_parquet(tmp_path / "s.parquet"), keys)
    assert key_problems(SNAPSHOT, composite).duplicate_samples == ['{"id":"2","seq":"1"}', '{"id":"3","seq":"2"}']
    assert sorted(rows_to_drop(pl.scan_parquet(tmp_path / "s.parquet"), _policy("keep_first")).to_list()) == [
        2,
        5,
        6,
        7,
    ]


@pytest.mark.parametrize(
    ("warehouse", "read_path"),
    [
        ("duckdb", "duckdb_arrow"),
        ("sqlite", "sqlalchemy"),
        pytest.param("postgres", "postgres_copy", marks=pytest.mark.postgres),
    ],
    indirect=["warehouse"],
)
def test_snapshot_metadata_names_the_read_path(
    warehouse: Warehouse, read_path, state_dir, emulator, instance, monkeypatch
):
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute(
        "create table src (id integer, uid varchar(10), v varchar(10))",
        "insert into src values (1, 'a', 'x'), (2, 'b', 'y'), (3, null, null)",
    )
    project = {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [TRACK]}
    run = run_sync(make_definitions(project), "t", instance)
    assert run.success, run.failure_messages()
    meta = run.metadata("snapshot", "m")
    assert meta["read_path"] == read_path and meta["rows_per_second"] > 0 and meta["dagster/row_count"] == 3
    snapshot = scan_snapshot(Path(meta["path"])).collect()
    assert snapshot.sort("id").rows() == [(1, "a", "x"), (2, "b", "y"), (3, None, None)]
    sync = ProjectSpec.model_validate(project).syncs[0]  # the file also keeps the sync's row hashes
    assert stored_hash_name(snapshot.schema, ["id"], sync.sent_columns) in pl.read_parquet_schema(meta["path"])


@pytest.mark.parametrize("one_schema", [False, True])
def test_row_hashes_are_kept_for_each_set_of_sent_columns(one_schema, tmp_path):
    path = tmp_path / "m.parquet"
    frames = [
        pl.DataFrame({"id": [1, 2], "v": ["a", None], "w": [1.5, 2.5]}),
        pl.DataFrame({"id": [3], "v": ["c"], "w": [None]}),
    ]
    write_snapshot(frames, path, FAIL, [["v"], ["v", "w"], ["v"], ["nope"]], one_schema=one_schema)
    written = pl.read_parquet(path)
    model = scan_snapshot(path).collect()
    assert model.columns == ["id", "v", "w"]
    assert sorted(set(written.columns) - set(model.columns)) == sorted(
        stored_hash_name(model.schema, ["id"], sent) for sent in (["v"], ["v", "w"])
    )  # one per distinct set, none for a set naming a column the model lacks
    for sent in (["v"], ["v", "w"]):
        made = current_rows(model, ["id"], sent).collect()[HASH]
        assert written[stored_hash_name(model.schema, ["id"], sent)].to_list() == made.to_list()


@pytest.mark.parametrize("one_schema", [False, True])
def test_row_hashes_stay_with_their_rows_when_duplicates_are_dropped(one_schema, tmp_path):
    path = tmp_path / "m.parquet"
    write_snapshot(SNAPSHOT.iter_slices(3), path, _policy("keep_last"), [["v", "seq"]], one_schema=one_schema)
    model = scan_snapshot(path).collect()
    made = current_rows(model, ["id"], ["v", "seq"]).collect()[HASH]
    assert pl.read_parquet(path)[stored_hash_name(model.schema, ["id"], ["v", "seq"])].to_list() == made.to_list()


@pytest.mark.parametrize("one_schema", [False, True])
def test_a_model_column_named_like_a_row_hash_is_refused(one_schema, tmp_path):
    path = tmp_path / "m.parquet"
    write_snapshot([pl.DataFrame({"id": [1]})], path, FAIL, one_schema=one_schema)
    clash = pl.DataFrame({"id": [2], f"{STORED_HASH_PREFIX}x": [1]})
    with pytest.raises(SnapshotError, match="starts with '__segment_sync_hash_'.*rename it"):
        write_snapshot([clash], path, FAIL, one_schema=one_schema)
    assert pl.read_parquet(path)["id"].to_list() == [1]


def test_read_path_setting_forces_sqlalchemy(duckdb_warehouse, state_dir, emulator, instance, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    project = ProjectSpec.model_validate(
        {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [TRACK]}
    )
    definitions = build_definitions(
        project,
        warehouse=WarehouseResource(read_path="sqlalchemy"),
        segment=SegmentResource(max_attempts=3, max_retry_seconds=5.0, timeout_seconds=5.0),
        state=StateResource(),
        logs=LogSettings(),
        alerts=AlertSettings(),
    )
    run = run_sync(definitions, "t", instance)
    assert run.success, run.failure_messages()
    assert run.metadata("snapshot", "m")["read_path"] == "sqlalchemy"


def test_snapshot_metadata_says_why_a_fast_path_was_not_taken(
    duckdb_warehouse, state_dir, emulator, instance, monkeypatch
):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url + "?threads=1")
    duckdb_warehouse.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    project = {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [TRACK]}
    run = run_sync(make_definitions(project), "t", instance)
    assert run.success, run.failure_messages()
    meta = run.metadata("snapshot", "m")
    assert meta["read_path"] == "sqlalchemy (the URL sets options that only SQLAlchemy applies)"
    assert meta["non_finite_values"] == {}


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.text(max_size=3), st.sampled_from(["a", "b", "", " "])), max_size=60))
def test_duplicate_keys_are_counted_as_a_plain_count_would(keys: list[str | None]) -> None:
    problems = key_problems(pl.DataFrame({"id": keys}, schema={"id": pl.String}), ["id"])
    counts = collections.Counter(k for k in keys if k is not None)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    assert problems.null_rows == keys.count(None)
    assert (problems.duplicate_keys, problems.duplicate_samples) == (len(duplicated), duplicated[:SAMPLE_SIZE])
