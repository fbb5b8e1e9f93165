"""The warehouse engine through the real assets: runs, no change, dry run, reset, and no local state needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from segment_sync.cli import main
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.warehouse_engine import sql_diff
from segment_sync.warehouse_engine.dry_run_tables import dry_run_lease
from segment_sync.warehouse_engine.lease import Lease
from segment_sync.warehouse_engine.sessions import open_engine
from segment_sync.warehouse_engine.state_tables import StateTables
from segment_sync_tests.support.segment_emulator import SegmentEmulator
from segment_sync_tests.support.sync_runs import TRACK, make_definitions, run_manual, run_sync
from segment_sync_tests.support.warehouses import Warehouse

MODEL = {"name": "m", "table": "src", "primary_key": "id"}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_warehouse(request: pytest.FixtureRequest) -> Iterator[tuple[Warehouse, str]]:
    """A warehouse with a table `src`, and a schema of its own for the engine's tables (dropped after)."""
    warehouse: Warehouse = request.getfixturevalue(f"{request.param}_warehouse")
    schema = f"ss_{uuid.uuid4().hex[:10]}"
    warehouse.execute("create table src (id integer, uid varchar(10), v varchar(10))")
    yield warehouse, schema
    warehouse.execute(f"drop schema if exists {schema} cascade")


def definitions(schema: str, **sync: object):
    project = {"models": [MODEL], "syncs": [{**TRACK, **sync}], "engine": "warehouse"}
    return make_definitions(project, warehouse={"state_schema": schema})


def test_runs_send_what_changed(engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    defs = definitions(schema)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b'), (3, 'u3', 'c'), (4, null, 'd')")
    first = run_sync(defs, "t", instance)
    assert first.success, first.failure_messages()
    assert sorted(e["userId"] for e in emulator.events_named("Added")) == ["u1", "u2", "u3"]
    assert first.metadata("snapshot", "m")["engine"] == "warehouse"
    assert first.metadata("snapshot", "m")["dagster/table_name"] == f"{schema}.snapshot__m"
    assert first.metadata("diff", "t")["dagster/table_name"] == f"{schema}.diff__t"
    assert first.metadata("segment", "t")["rows_rejected"] == 1  # no user id

    warehouse.execute(
        "update src set v = 'z' where id = 1", "delete from src where id = 2", "insert into src values (5, 'u5', 'e')"
    )
    emulator.reset()
    second = run_sync(defs, "t", instance)
    assert second.success, second.failure_messages()
    assert {k: second.metadata("diff", "t")[k] for k in ("added", "changed", "removed")} == {
        "added": 2,
        "changed": 1,
        "removed": 1,  # the row with no user id is still to send
    }
    assert [e["properties"]["v"] for e in emulator.events_named("Changed")] == ["z"]
    assert [e["userId"] for e in emulator.events_named("Removed")] == ["u2"]
    assert [e["userId"] for e in emulator.events_named("Added")] == ["u5"]
    assert second.metadata("diff", "t")["rows_last_delivered"] == 3

    emulator.reset()
    warehouse.execute("insert into src values (null, 'u9', 'n')")  # a null key: not a row the diff compares
    monkeypatch.setenv("SEGMENT_SYNC_STATE_DIR", str(state_dir.parent / "another_machine"))  # a fresh container
    third = run_sync(defs, "t", instance)
    assert third.success, third.failure_messages()
    assert emulator.counts()["accepted"] == 0
    assert third.metadata("diff", "t")["added"] == 1 and third.metadata("segment", "t")["events_sent"] == 0
    live = warehouse.query(f"select count(*) from {schema}.delivered where content is not null")
    assert third.metadata("diff", "t")["rows_last_delivered"] == live[0][0] == 3  # u2 removed, u5 added


def test_dry_run_sends_nothing_and_reset_starts_over(
    engine_warehouse, state_dir, emulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    defs = definitions(schema)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    dry = run_manual(defs, "dry_run_t", instance)
    assert dry.success, dry.failure_messages()
    assert emulator.counts()["accepted"] == 0 and dry.result.get_asset_materialization_events() == []
    assert Path(dry.metadata()["dry_run_request_bodies"]).read_text().count('"Added"') == 2
    real = run_sync(defs, "t", instance)
    assert real.success and len(emulator.events_named("Added")) == 2

    reset = run_sync(defs, "t", instance, diff={"reset": True})
    assert reset.success, reset.failure_messages()
    assert reset.metadata("segment", "t")["events_sent"] == 0
    engine = sa.create_engine(warehouse.url)
    with engine.connect() as conn:
        kept = conn.execute(sa.text(f"select count(*) from {schema}.delivered_before_reset__t__1")).scalar_one()
    engine.dispose()
    assert kept == 2
    emulator.reset()
    again = run_sync(defs, "t", instance)
    assert again.success and len(emulator.events_named("Added")) == 2  # new messageIds: a new sync identity


def test_a_dry_run_leaves_the_syncs_tables_and_state_as_they_were(
    engine_warehouse, state_dir, emulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    defs = definitions(schema)
    assert "The sync's state, snapshot and diff stay as they are." in defs.resolve_job_def("dry_run_t").description
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b'), (3, 'u3', 'c')")
    first_dry = run_manual(defs, "dry_run_t", instance)
    assert first_dry.success, first_dry.failure_messages()
    assert first_dry.metadata()["guard"] == "size limits not applied: the sync's first run sends every row as added"
    assert run_sync(defs, "t", instance).success
    warehouse.execute("update src set v = 'z' where id = 1", "delete from src where id = 2")
    engine = sa.create_engine(warehouse.url)

    def tables_and_state() -> dict[str, object]:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names(schema=schema)
            return {
                "tables": sorted(names),
                **{
                    name: sorted(map(tuple, conn.execute(sa.text(f"select * from {schema}.{name}")).all()))
                    for name in ("snapshot__m", "diff__t", "snapshots", "delivered", "journal", "leases")
                },
                "syncs": conn.execute(
                    sa.text(f"select generation, baseline_done, hash_basis, diff_info, updated_at from {schema}.syncs")
                ).all(),
            }

    before = tables_and_state()
    emulator.reset()
    dry = run_manual(defs, "dry_run_t", instance)
    assert dry.success, dry.failure_messages()
    assert emulator.counts()["accepted"] == 0
    bodies = Path(dry.metadata()["dry_run_request_bodies"]).read_text()
    assert bodies.count('"Changed"') == 1 and bodies.count('"Removed"') == 1 and '"Added"' not in bodies
    assert dry.metadata()["guard"] == "within limits"
    assert tables_and_state() == before  # no scratch table is left, and nothing of the sync's changed
    engine.dispose()

    real = run_sync(defs, "t", instance)
    assert real.success, real.failure_messages()
    assert [e["properties"]["v"] for e in emulator.events_named("Changed")] == ["z"]
    assert [e["userId"] for e in emulator.events_named("Removed")] == ["u2"]


def test_a_dry_run_of_a_model_with_repeated_keys_says_so_and_leaves_no_table(
    engine_warehouse, state_dir, emulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (1, 'u1', 'b'), (2, 'u2', 'c')")
    dry = run_manual(definitions(schema), "dry_run_t", instance)
    assert not dry.success
    message = dry.failure_messages()[0]
    assert "model 'm' has 1 primary keys held by more than one row" in message
    assert "keep one row per key in the model's query" in message
    engine = sa.create_engine(warehouse.url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names(schema=schema)
    engine.dispose()
    assert not [n for n in names if "__dry_" in n] and emulator.requests == []


def test_the_tables_of_a_dry_run_that_died_are_dropped_by_the_next_run_and_a_live_ones_are_kept(
    engine_warehouse, state_dir, emulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    defs = definitions(schema)
    assert run_sync(defs, "t", instance).success
    model, sync = ModelSpec(**MODEL), SyncSpec(**TRACK)
    engine = open_engine(warehouse.url)
    tables = StateTables(schema)
    for run_id, renewed in (("dead0000-1", "2026-01-01 00:00:00+00"), ("live0000-1", None)):
        scratch = tables.scratch_copy(run_id)  # what a dry run has made when it is killed mid-diff
        sql_diff.take_snapshot(warehouse.url, engine, scratch, model)
        sql_diff.find_changes(engine, scratch, sync, model, trust_hashes=True)
        lease = Lease(engine, tables, dry_run_lease(scratch, sync), run_id)
        lease.acquire()
        lease._stop.set()  # its renewals stop, as when its process dies
        if renewed:
            with engine.begin() as conn:
                conn.execute(
                    sa.update(tables.leases).where(tables.leases.c.run_id == run_id).values(renewed_at=renewed)
                )

    def leftovers() -> list[str]:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names(schema=schema)
            leases = conn.execute(sa.select(tables.leases.c.run_id)).scalars().all()
            noted = conn.execute(sa.select(tables.snapshots.c.model)).scalars().all()
        return sorted([n for n in names if "__dry_" in n] + leases + [n for n in noted if "__dry_" in n])

    assert leftovers() == [
        "dead0000-1",
        "diff__t__dry_dead0000",
        "diff__t__dry_live0000",
        "live0000-1",
        "m__dry_dead0000",
        "m__dry_live0000",
        "snapshot__m__dry_dead0000",
        "snapshot__m__dry_live0000",
    ]
    again = run_sync(defs, "t", instance)
    assert again.success, again.failure_messages()
    assert leftovers() == ["diff__t__dry_live0000", "live0000-1", "m__dry_live0000", "snapshot__m__dry_live0000"]
    assert "dropped the tables of 1 dry runs that died" in str(
        [e.message for e in instance.all_logs(again.result.run_id)]
    )
    engine.dispose()


def test_long_model_and_sync_names_run_dry_run_and_reset(engine_warehouse, state_dir, emulator, instance, monkeypatch):
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    model, sync = "m" * 60, "s" * 60  # the tables made of them pass PostgreSQL's 63 bytes
    project = {
        "models": [{**MODEL, "name": model}],
        "syncs": [{**TRACK, "name": sync, "model": model}],
        "engine": "warehouse",
    }
    defs = make_definitions(project, warehouse={"state_schema": schema})
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    assert run_sync(defs, sync, instance).success
    warehouse.execute("update src set v = 'z' where id = 1")
    dry = run_manual(defs, f"dry_run_{sync}", instance)
    assert dry.success, dry.failure_messages()
    assert Path(dry.metadata()["dry_run_request_bodies"]).read_text().count('"Changed"') == 1
    again = run_sync(defs, sync, instance)
    assert again.success, again.failure_messages()
    assert [e["properties"]["v"] for e in emulator.events_named("Changed")] == ["z"]
    reset = run_sync(defs, sync, instance, diff={"reset": True})
    assert reset.success, reset.failure_messages()
    engine = sa.create_engine(warehouse.url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names(schema=schema)
    engine.dispose()
    assert max(map(len, names)) <= 63 and any(n.startswith("delivered_before_reset__sss") for n in names)
    assert not [n for n in names if "__dry_" in n]


def test_two_engines_on_one_model_is_a_clear_error() -> None:
    project = {"models": [MODEL], "syncs": [TRACK, {**TRACK, "name": "u", "engine": "warehouse"}]}
    with pytest.raises(ValueError, match="the syncs of model 'm' use both engines"):
        make_definitions(project)


@pytest.mark.parametrize("key", ["id", ["uid", "id"]], ids=["one-column", "composite"])
def test_state_moves_between_engines_without_a_resend(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch, capsys, key
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    project = {"models": [{**MODEL, "primary_key": key}], "syncs": [TRACK]}
    local_defs = make_definitions(project, warehouse={"state_schema": schema})
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    assert run_sync(local_defs, "t", instance).success

    move = ["move-state", "t", "--to", "warehouse", "--state-dir", str(state_dir), "--schema", schema]
    assert main(move) == 0
    assert "2 delivered rows moved" in capsys.readouterr().out
    assert main(move) == 1  # the warehouse has the state now: never overwritten
    assert "already has state in the warehouse" in capsys.readouterr().err

    emulator.reset()
    remote_defs = make_definitions({**project, "engine": "warehouse"}, warehouse={"state_schema": schema})
    unchanged = run_sync(remote_defs, "t", instance)
    assert unchanged.success, unchanged.failure_messages()
    assert emulator.counts()["accepted"] == 0 and unchanged.metadata("diff", "t")["hashes_refreshed"] == 2
    warehouse.execute("update src set v = 'z' where id = 2", "insert into src values (3, 'u3', 'c')")
    changed = run_sync(remote_defs, "t", instance)
    assert changed.success and [e["userId"] for e in emulator.events_named("Changed")] == ["u2"]
    assert changed.metadata("snapshot", "m")["dagster/row_count"] == 3
    assert [e["userId"] for e in emulator.events_named("Added")] == ["u3"]

    back = state_dir.parent / "back"
    assert main(["move-state", "t", "--to", "polars", "--state-dir", str(back), "--schema", schema]) == 0
    monkeypatch.setenv("SEGMENT_SYNC_STATE_DIR", str(back))
    emulator.reset()
    assert run_sync(local_defs, "t", instance).success
    assert emulator.counts()["accepted"] == 0


def test_a_key_whose_type_changed_stops_the_diff_until_cast_back_or_reset(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    defs = definitions(schema)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    assert run_sync(defs, "t", instance).success
    warehouse.execute("alter table src alter column id type varchar(20)")
    emulator.reset()
    changed = run_sync(defs, "t", instance)
    assert not changed.success and emulator.counts()["accepted"] == 0
    assert "primary key of model 'm' is now text but the delivered rows were keyed as integer" in " ".join(
        changed.failure_messages()
    )
    reset = run_sync(defs, "t", instance, diff={"reset": True})
    assert reset.success, reset.failure_messages()
    again = run_sync(defs, "t", instance)
    assert again.success and len(emulator.events_named("Added")) == 2


def test_a_composite_key_syncs_and_finds_its_test_row(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    project = {"models": [{**MODEL, "primary_key": ["uid", "id"]}], "syncs": [TRACK], "engine": "warehouse"}
    defs = make_definitions(project, warehouse={"state_schema": schema})
    warehouse.execute("insert into src values (1, 'u1', 'a'), (1, 'u2', 'b'), (2, 'u1', 'c'), (3, null, 'd')")
    first = run_sync(defs, "t", instance)
    assert first.success, first.failure_messages()
    assert first.metadata("snapshot", "m")["key_type"] == "text,integer"
    assert sorted(e["properties"]["v"] for e in emulator.events_named("Added")) == ["a", "b", "c"]
    assert first.metadata("segment", "t")["rows_rejected"] == 1  # a null key part

    warehouse.execute("update src set v = 'z' where id = 1 and uid = 'u2'", "insert into src values (1, 'u1', 'a')")
    emulator.reset()
    doubled = run_sync(defs, "t", instance)
    assert not doubled.success and emulator.counts()["accepted"] == 0

    warehouse.execute("delete from src where v = 'a'", "insert into src values (1, 'u1', 'a')")
    second = run_sync(defs, "t", instance)
    assert second.success, second.failure_messages()
    assert [e["properties"]["v"] for e in emulator.accepted] == ["z"]
    test_row = run_manual(defs, "test_row_t", instance, {"key": '{"uid":"u2","id":"1"}'})
    assert test_row.success and emulator.accepted[-1]["properties"]["v"] == "z"


def test_a_test_row_and_a_replay_send_outside_the_diff_and_leave_the_state(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    defs = definitions(schema)
    first = run_sync(defs, "t", instance)
    assert first.success, first.failure_messages()
    original = {e["userId"]: e for e in emulator.accepted}
    warehouse.execute("update src set v = 'changed' where id = 2")  # the test row is the snapshot's, not the table's

    for key, uid in (("2", "u2"), ("", "u1")):  # empty: the first key of the snapshot
        run = run_manual(defs, "test_row_t", instance, {"key": key})
        assert run.success, run.failure_messages()
        sent = emulator.accepted[-1]
        assert (sent["userId"], sent["properties"]["v"]) == (uid, original[uid]["properties"]["v"])
        assert sent["messageId"] != original[uid]["messageId"]
    missing = run_manual(defs, "test_row_t", instance, {"key": "9"})
    assert not missing.success and "nothing was sent" in " ".join(missing.failure_messages())

    replay = run_manual(defs, "replay_t", instance, {"keys": ["1"]})
    assert replay.success, replay.failure_messages()
    assert emulator.accepted[-1]["messageId"].startswith(original["u1"]["messageId"] + "-replay-")

    emulator.reset()
    again = run_sync(defs, "t", instance)  # the state knows only the sync's own deliveries: one change to send
    assert again.success and [e["properties"]["v"] for e in emulator.events_named("Changed")] == ["changed"]
    assert {k: again.metadata("diff", "t")[k] for k in ("added", "changed", "removed")} == {
        "added": 0,
        "changed": 1,
        "removed": 0,
    }


def test_a_full_resync_sends_every_row_again_with_new_message_ids(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    defs = definitions(schema)
    warehouse.execute("insert into src values (1, 'u1', 'a'), (2, 'u2', 'b')")
    assert run_sync(defs, "t", instance).success
    first = {e["messageId"] for e in emulator.events_named("Added")}
    resync = run_sync(defs, "t", instance, diff={"full_resync": True})
    assert resync.success, resync.failure_messages()
    assert resync.metadata("diff", "t")["full_resync"] is True and resync.metadata("diff", "t")["added"] == 2
    added = emulator.events_named("Added")
    assert len(added) == 4 and len({e["messageId"] for e in added} - first) == 2 and emulator.duplicates == 0
    emulator.reset()
    after = run_sync(defs, "t", instance)
    assert after.success and emulator.counts()["accepted"] == 0  # it carries on normally


@pytest.mark.parametrize(("policy", "expected"), [("keep_last", "late"), ("keep_first", "early")])
def test_a_duplicate_key_policy_keeps_one_row_and_reports_the_rest(
    engine_warehouse, state_dir, emulator: SegmentEmulator, instance, monkeypatch, policy, expected
) -> None:
    warehouse, schema = engine_warehouse
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute(
        "alter table src add column seq integer",
        "insert into src values (1, 'a', 'early', 1), (1, 'a', 'late', 3), (2, 'b', 'x', 1), (1, 'a', 'mid', 2)",
    )
    model = {**MODEL, "on_duplicate_key": policy, "order_by": "seq"}
    project = {"models": [model], "syncs": [TRACK], "engine": "warehouse"}
    defs = make_definitions(project, warehouse={"state_schema": schema})
    dry = run_manual(defs, "dry_run_t", instance)
    assert dry.success, dry.failure_messages()
    run = run_sync(defs, "t", instance)
    assert run.success, run.failure_messages()
    snapshot = run.metadata("snapshot", "m")
    assert (snapshot["duplicate_rows_dropped"], snapshot["duplicate_rows_dropped_keys"]) == (2, ["1"])
    assert snapshot["dagster/row_count"] == 2 and "seq" in str(snapshot["dagster/column_schema"])
    assert "__segment_sync" not in str(snapshot["dagster/column_schema"])
    assert sorted((e["userId"], e["properties"]["v"]) for e in emulator.accepted) == [("a", expected), ("b", "x")]
