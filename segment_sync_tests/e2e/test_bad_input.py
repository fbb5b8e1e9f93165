"""Bad input through the real assets: each gets a clear error, and nothing is lost or sent wrongly."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest

from segment_sync.storage.state import SyncState
from segment_sync_tests.support.segment_emulator import Fault
from segment_sync_tests.support.sync_runs import TRACK, WRITE_KEY, make_definitions, run_sync


def _project(sync: dict | None = None, **model: object) -> dict:
    return {"models": [{"name": "m", "table": "src", "primary_key": "id", **model}], "syncs": [sync or TRACK]}


@pytest.fixture
def duck(duckdb_warehouse, state_dir, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    return duckdb_warehouse


def test_duplicate_primary_keys_block_the_sync(duck, emulator, instance):
    duck.execute("create table src as select * from (values (1, 'a', 'x'), (1, 'b', 'y'), (2, 'c', 'z')) t(id, uid, v)")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert not run.success
    assert run.materialized() == {"snapshot/m"}  # diff and delivery never ran
    check = run.result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert check.metadata["duplicate_keys"].value == 1
    assert check.metadata["duplicate_key_samples"].value == ["1"]
    assert emulator.requests == []


@pytest.mark.parametrize("checks", ["noted", "stale"])
def test_a_diff_run_alone_refuses_a_snapshot_with_duplicate_keys(duck, emulator, instance, state_dir, checks):
    duck.execute("create table src as select * from (values (1, 'a', 'x'), (1, 'b', 'y'), (2, 'c', 'z')) t(id, uid, v)")
    definitions = make_definitions(_project())
    assert not run_sync(definitions, "t", instance).success
    if checks == "stale":  # the note is for another file: the diff counts the keys itself
        noted = state_dir / "snapshots" / "m.checks.json"
        noted.write_bytes(orjson.dumps({**orjson.loads(noted.read_bytes()), "duplicate_keys": 0, "file": [0, 0]}))
    diff_only = definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey(["diff", "t"])}
    )
    result = diff_only.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "model 'm' has duplicate primary keys" in failure.step_failure_data.error.message
    assert emulator.requests == []


def test_null_primary_keys_are_rejected_rows_and_the_rest_is_sent(duck, emulator, instance):
    duck.execute("create table src as select * from (values (1, 'a', 'x'), (null, 'b', 'y')) t(id, uid, v)")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert run.success
    assert run.metadata("snapshot", "m")["null_key_rows"] == 1
    meta = run.metadata("segment", "t")
    assert (meta["events_sent"], meta["rows_rejected"]) == (1, 1)
    [sample] = meta["rejected_sample"]  # the event log shows no row values, unless the sync opts in
    assert sample["key"] is None and "primary key of model 'm' is null" in sample["reason"]
    assert '"uid":"b"' not in sample["reason"]
    assert '\\"uid\\":\\"b\\"' in Path(meta["rejected_rows_file"]).read_text()  # the debugger's file has them
    assert [e["userId"] for e in emulator.accepted] == ["a"]

    opted = run_sync(make_definitions(_project({**TRACK, "preview_values": True})), "t", instance)
    assert '"uid":"b"' in opted.metadata("segment", "t")["rejected_sample"][0]["reason"]


def test_mapping_to_a_missing_column_names_the_sync_and_column(duck, emulator, instance):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    run = run_sync(make_definitions(_project({**TRACK, "fields": ["v", "plan_nam"]})), "t", instance)
    assert not run.success
    [message] = run.failure_messages()
    assert "sync 't'" in message and "'plan_nam'" in message and "id, uid, v" in message
    assert "Fix the sync's mapping (syncs[0])" in message
    assert emulator.requests == []


def test_primary_key_column_missing_from_the_query(duck, emulator, instance):
    duck.execute("create table src as select 1 as ident, 'a' as uid, 'x' as v")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert not run.success
    assert "model 'm'" in run.failure_messages()[0] and "['id']" in run.failure_messages()[0]


def test_rows_without_ids_are_rejected_and_retried_later(duck, emulator, instance):
    duck.execute(
        "create table src as select * from (values (1, 'a', 'x'), (2, null, 'y'), (3, '  ', 'z')) t(id, uid, v)"
    )
    definitions = make_definitions(_project())
    run = run_sync(definitions, "t", instance)
    assert run.success
    meta = run.metadata("segment", "t")
    assert (meta["events_sent"], meta["rows_rejected"]) == (1, 2)
    rejected = [json.loads(line) for line in Path(meta["rejected_rows_file"]).read_text().splitlines()]
    assert [r["key"] for r in rejected] == ["2", "3"] and all("no user id" in r["reason"] for r in rejected)

    duck.execute("update src set uid = 'b' where id = 2")
    run = run_sync(definitions, "t", instance)
    assert run.metadata("segment", "t")["events_sent"] == 1  # the fixed row is now delivered as "added"
    assert [e["userId"] for e in emulator.accepted] == ["a", "b"]


def test_awkward_values_become_valid_json(duck, emulator, instance):
    conn = duckdb.connect(duck.url.removeprefix("duckdb:///"))
    conn.execute(
        "create table src as select 1 as id, 'ü😀' as uid, cast('nan' as double) as v, "
        "cast('12345678901234567890.123456789' as decimal(38, 9)) as big, "
        "timestamp '2026-03-01 10:00:00' as naive, timestamptz '2026-03-01 10:00:00+05:00' as aware, "
        "date '2026-03-01' as day, {'a': 1, 'b': [1, 2]} as nested, 'x' || repeat('y', 5000) as long_text"
    )
    conn.close()
    sync = {**TRACK, "fields": ["v", "big", "naive", "aware", "day", "nested", "long_text"]}
    run = run_sync(make_definitions(_project(sync)), "t", instance)
    assert run.success, run.failure_messages()
    [event] = emulator.accepted
    assert event["userId"] == "ü😀"
    props = event["properties"]
    assert props["v"] is None
    assert props["naive"] == "2026-03-01T10:00:00Z" and props["aware"] == "2026-03-01T05:00:00Z"
    assert props["day"] == "2026-03-01" and props["nested"] == {"a": 1, "b": [1, 2]}
    raw = gzip.decompress(emulator.requests[0].body)
    assert b"12345678901234567890.123456789" in raw  # every digit of the Decimal, as a JSON number
    assert "ü😀".encode() in raw
    assert Decimal(json.loads(raw, parse_float=Decimal)["batch"][0]["properties"]["big"]) == Decimal(
        "12345678901234567890.123456789"
    )


def test_oversized_row_is_rejected_and_the_rest_delivered(duck, emulator, instance):
    duck.execute(
        "create table src as select i as id, 'u' || i as uid, "
        "repeat('x', case when i = 2 then 40000 else 10 end) as v from range(1, 4) t(i)"
    )
    run = run_sync(make_definitions(_project()), "t", instance)
    assert run.success
    meta = run.metadata("segment", "t")
    assert (meta["events_sent"], meta["rows_rejected"]) == (2, 1)
    assert "32,000" in meta["rejected_sample"][0]["reason"] and meta["rejected_sample"][0]["key"] == "2"


def test_missing_write_key_fails_before_any_work(duck, emulator, instance, monkeypatch, state_dir):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert not run.success
    assert run.materialized() == set()
    assert "SEGMENT_WRITE_KEY is not set" in run.error_text()
    assert emulator.requests == [] and not (state_dir / "syncs").exists()


def test_warehouse_down_names_the_model_and_hides_the_password(state_dir, emulator, instance, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://sync:s3cret-pw@127.0.0.1:1/analytics")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert not run.success
    [message] = run.failure_messages()
    assert "model 'm'" in message and "127.0.0.1" in message
    assert "s3cret-pw" not in run.error_text()
    assert not (state_dir / "syncs").exists()


def test_state_survives_a_wiped_dagster_instance(duck, emulator):
    import dagster as dg

    duck.execute("create table src as select * from (values (1, 'a', 'x')) t(id, uid, v)")
    definitions = make_definitions(_project())
    with dg.instance_for_test() as first:
        assert run_sync(definitions, "t", first).success
    duck.execute("insert into src values (2, 'b', 'y')")
    with dg.instance_for_test() as fresh:
        run = run_sync(definitions, "t", fresh)
    assert run.metadata("segment", "t")["events_sent"] == 1
    assert [e["userId"] for e in emulator.accepted] == ["a", "b"]


def test_ambiguous_failure_is_resent_with_the_same_message_ids(duck, emulator, instance):
    duck.execute("create table src as select i as id, 'u' || i as uid, 'v' as v from range(1, 6) t(i)")
    definitions = make_definitions(_project())
    emulator.inject(*[Fault(status=503, record_first=True)] * 3)  # recorded by Segment, but the client never knows
    run = run_sync(definitions, "t", instance)
    assert not run.success
    assert "not delivered" in run.failure_messages()[0]
    first_ids = [e["messageId"] for e in emulator.accepted]
    assert len(first_ids) == 15 and len(set(first_ids)) == 5  # three attempts of one batch, same ids each time

    run = run_sync(definitions, "t", instance)
    assert run.success
    assert set(emulator.unique_events()) == set(first_ids)
    assert emulator.duplicates == 15  # attempts 2 and 3 of run 1 (10) and the 5 re-sent by run 2


def test_retry_after_is_honoured_and_counted(duck, emulator, instance):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    emulator.inject(Fault(status=429, retry_after="1", body="slow down"))
    run = run_sync(make_definitions(_project()), "t", instance)
    assert run.success
    meta = run.metadata("segment", "t")
    assert (meta["retries"], meta["requests"], meta["events_sent"]) == (1, 2, 1)
    assert meta["duration_seconds"] >= 1.0


def test_a_second_concurrent_run_reports_the_lock_and_sends_nothing(duck, emulator, instance, state_dir):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    definitions = make_definitions(_project())
    store = SyncState(state_dir / "syncs" / "t", "t")
    with store.lock():
        run = run_sync(definitions, "t", instance)
    assert not run.success
    assert "already running" in run.failure_messages()[0]
    assert emulator.requests == []


def test_outbox_destination_writes_request_bodies_without_the_write_key(
    duck, emulator, instance, monkeypatch, state_dir
):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    monkeypatch.setenv("SEGMENT_DESTINATION", "outbox")
    run = run_sync(make_definitions(_project()), "t", instance)
    assert run.success
    [line] = (state_dir / "outbox" / "t.jsonl").read_bytes().splitlines()
    body = orjson.loads(line)
    assert [e["userId"] for e in body["batch"]] == ["a"] and "writeKey" not in body
    assert WRITE_KEY.encode() not in line and emulator.requests == []


def test_a_storm_of_429s_slows_the_sync_down_but_it_finishes(duck, emulator, instance):
    duck.execute("create table src as select i as id, 'u' || i as uid, 'v' as v from range(1, 6) t(i)")
    emulator.inject(*[Fault(status=429, retry_after="0", body="slow down")] * 6)  # more 429s than max_attempts (3)
    run = run_sync(make_definitions(_project(), segment={"max_requests_per_second": 50}), "t", instance)
    assert run.success, run.failure_messages()
    meta = run.metadata("segment", "t")
    assert (meta["events_sent"], meta["retries"], meta["requests"]) == (5, 6, 7)
    assert len(emulator.unique_events()) == 5
