"""Operating syncs: the row log and API call log, retention, warehouse write-back, and the run controls."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import dagster as dg
import orjson
import polars as pl
import pytest
import sqlalchemy as sa

from segment_sync.assets import MANUAL_TAG
from segment_sync.cli import main as cli
from segment_sync.storage.run_log import prune_logs, read_row_log
from segment_sync_tests.support.segment_emulator import Fault
from segment_sync_tests.support.sync_runs import TRACK, WRITE_KEY, SyncRun, make_definitions, run_manual, run_sync

PROJECT = {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [TRACK]}


@pytest.fixture
def duck(duckdb_warehouse, state_dir, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute(
        "create table src as select * from (values (1, 'a', 'x'), (2, 'b', 'y'), (3, null, 'z')) t(id, uid, v)"
    )
    return duckdb_warehouse


def _run(instance, *, project=PROJECT, diff=None):
    definitions = make_definitions(project)
    job = definitions.resolve_job_def("sync_t")
    config = {
        "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        "ops": {"diff__t": {"config": diff or {}}},
    }
    return SyncRun(job.execute_in_process(instance=instance, raise_on_error=False, run_config=config))


def test_the_row_log_has_every_row_with_its_outcome(duck, emulator, instance, state_dir):
    run = _run(instance)
    assert run.success
    log = read_row_log(state_dir / "syncs" / "t", run.result.run_id).collect().sort("key")
    assert log.select("key", "kind", "event", "status").rows() == [
        ("1", "added", "Added", "delivered"),
        ("2", "added", "Added", "delivered"),
        ("3", "added", None, "rejected"),
    ]
    delivered = {e["messageId"] for e in emulator.accepted}
    assert set(log.filter(pl.col("status") == "delivered")["message_id"]) == delivered
    assert "no user id" in log.filter(pl.col("key") == "3")["reason"][0]
    assert run.metadata("segment", "t")["sync_log"].endswith(f"{run.result.run_id}.parquet")


def test_every_api_call_is_recorded_without_the_write_key(duck, emulator, instance, state_dir):
    emulator.inject(Fault(status=503, body="unavailable"))
    run = _run(instance)
    assert run.success
    meta = run.metadata("segment", "t")
    assert "| 1 | 1 | 503 |" in meta["api_calls"] and "| 1 | 2 | 200 |" in meta["api_calls"]
    text = Path(meta["api_calls_file"]).read_text()
    calls = [json.loads(line) for line in text.splitlines()]
    assert [(c["attempt"], c["status"], c["events"], c["response"]) for c in calls] == [
        (1, 503, 2, "unavailable"),
        (2, 200, 2, '{"success":true}'),
    ]
    sent = json.loads(gzip.decompress(emulator.requests[-1].body))
    assert calls[1]["request"]["batch"] == sent["batch"] and calls[1]["request"]["sentAt"] == sent["sentAt"]
    assert "writeKey" not in calls[1]["request"] and WRITE_KEY not in text
    assert calls[0]["latency_ms"] >= 0 and calls[0]["bytes"] > 0


def test_logs_past_their_retention_are_pruned(duck, emulator, instance, state_dir):
    first = _run(instance)
    folder = state_dir / "syncs" / "t"
    old = folder / "log" / f"{first.result.run_id}.parquet"
    week_ago = time.time() - 8 * 86_400
    for path in folder.glob("*/*"):
        os.utime(path, (week_ago, week_ago))
    assert prune_logs(folder, retention_days=7) == 3  # row log, rejected rows and API calls of the first run
    assert not old.exists()


def test_the_sync_log_can_go_to_a_warehouse_table(duck, emulator, instance):
    definitions = make_definitions(PROJECT, logs={"warehouse_table": "segment_sync_log"})
    run = run_sync(definitions, "t", instance)
    assert run.success
    engine = sa.create_engine(duck.url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select key, status from segment_sync_log order by key")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("1", "delivered"), ("2", "delivered"), ("3", "rejected")]


def test_dry_run_writes_the_request_bodies_and_changes_nothing(duck, emulator, instance, state_dir):
    definitions = make_definitions(PROJECT)
    run = run_manual(definitions, "dry_run_t", instance)
    assert run.success, run.failure_messages()
    assert run.result.dagster_run.tags[MANUAL_TAG] == "dry_run"
    meta = run.metadata()
    assert meta["manual_run"] == "dry run"
    assert meta["guard"] == "size limits not applied: the sync's first run sends every row as added"
    [body] = Path(meta["dry_run_request_bodies"]).read_text().splitlines()
    assert [e["userId"] for e in orjson.loads(body)["batch"]] == ["a", "b"]
    assert emulator.requests == [] and "| track | Added |" in meta["preview"]
    assert "| a |" not in meta["preview"] and "preview_values" in meta["preview"]  # no row values by default
    assert run.result.get_asset_materialization_events() == []
    assert not (state_dir / "snapshots").exists() or not list((state_dir / "snapshots").glob("*.parquet"))
    [observed] = run.observations()
    assert observed["manual_run"] == "dry run"
    real = _run(instance)  # the real run sends the same events, with the same messageIds
    assert real.metadata("segment", "t")["events_sent"] == 2
    assert [e["messageId"] for e in emulator.accepted] == [e["messageId"] for e in orjson.loads(body)["batch"]]


def test_a_dry_run_leaves_the_snapshot_the_diff_and_the_latest_delivery_alone(duck, emulator, instance, state_dir):
    definitions = make_definitions(PROJECT)
    real = _run(instance)
    files = sorted(p for p in state_dir.rglob("*") if p.is_file() and "log" not in p.parts and "calls" not in p.parts)
    before = {p: p.read_bytes() for p in files}
    duck.execute("insert into src values (4, 'd', 'w')")
    for job, config in (("dry_run_t", None), ("test_row_t", {"key": "1"}), ("replay_t", {"keys": ["1"]})):
        assert run_manual(definitions, job, instance, config).success
    assert {p: p.read_bytes() for p in files} == before
    for key in (["snapshot", "m"], ["diff", "t"], ["segment", "t"]):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)).run_id == real.result.run_id
    assert _run(instance).metadata("diff", "t")["added"] == 2  # row 4, and row 3 (no user id) retried


def test_a_dry_run_with_nothing_to_send_succeeds_and_says_so(duck, emulator, instance, state_dir):
    assert _run(instance).success  # everything delivered: the next diff has no rows
    run = run_manual(make_definitions(PROJECT), "dry_run_t", instance)
    assert run.success, run.failure_messages()
    meta = run.metadata()
    assert (meta["events_sent"], meta["rows_skipped"], meta["rows_rejected"]) == (0, 0, 1)
    assert meta["preview"] == "Nothing to send (0 rows skipped, 1 rejected): no request body was written."
    assert "dry_run_request_bodies" not in meta
    assert not list((state_dir / "syncs" / "t" / "dry_runs").glob("*"))


def test_a_dry_run_reports_what_the_guard_would_say(duck, emulator, instance, state_dir):
    duck.execute("insert into src select i, 'u' || i, 'v' from range(4, 40) t(i)")
    assert _run(instance).success
    duck.execute("delete from src where id > 5")
    run = run_manual(make_definitions(PROJECT), "dry_run_t", instance)
    assert run.success and "removed" in run.metadata()["guard"]
    assert emulator.accepted[-1]["event"] == "Added"  # nothing more was sent


def test_full_resync_sends_everything_again_with_new_message_ids(duck, emulator, instance):
    assert _run(instance).success
    first = {e["userId"]: e["messageId"] for e in emulator.accepted}
    run = _run(instance, diff={"full_resync": True})
    assert run.success and run.metadata("diff", "t")["added"] == 3
    again = {e["userId"]: e["messageId"] for e in emulator.accepted[2:]}
    assert again.keys() == first.keys() and not set(again.values()) & set(first.values())
    assert _run(instance).metadata("segment", "t")["events_sent"] == 0  # then carries on normally


def test_reset_forgets_state_and_the_next_run_sends_every_row_as_new(duck, emulator, instance, state_dir):
    assert _run(instance).success
    first_ids = {e["messageId"] for e in emulator.accepted}
    run = _run(instance, diff={"reset": True})
    assert run.success and run.metadata("segment", "t")["events_sent"] == 0
    assert list((state_dir / "syncs" / "t").glob("delivered.before-reset-*.parquet"))
    run = _run(instance)
    assert run.metadata("segment", "t")["events_sent"] == 2
    assert not {e["messageId"] for e in emulator.accepted[2:]} & first_ids


def test_test_row_sends_one_event_and_shows_the_response(duck, emulator, instance, state_dir):
    assert _run(instance, project={**PROJECT, "syncs": [{**TRACK, "send_initial": False}]}).success
    definitions = make_definitions(PROJECT)
    run = run_manual(definitions, "test_row_t", instance, {"key": "2"})
    assert run.success, run.failure_messages()
    meta = run.metadata()
    assert meta["manual_run"] == "test row" and meta["segment_response"]["status"] == 200
    assert meta["event"] == {
        "type": "track",
        "event": "Added",
        "messageId": meta["event"]["messageId"],
        "properties": ["v"],
        "userId": "(set)",
    }  # field names, no values
    assert [e["userId"] for e in emulator.accepted] == ["b"]
    assert _run(instance).metadata("segment", "t")["events_sent"] == 0  # state was not touched
    missing = run_manual(definitions, "test_row_t", instance, {"key": "99"})
    assert not missing.success and "no row with primary key '99'" in missing.failure_messages()[0]


def test_a_test_row_without_a_key_sends_the_snapshots_first_row_and_shows_values_when_asked(
    duck, emulator, instance, state_dir
):
    project = {**PROJECT, "syncs": [{**TRACK, "preview_values": True}]}
    assert _run(instance, project=project).success
    run = run_manual(make_definitions(project), "test_row_t", instance)  # the job's default config
    assert run.success, run.failure_messages()
    assert run.metadata()["key"] == "1" and run.metadata()["event"]["properties"] == {"v": "x"}
    assert emulator.accepted[-1]["userId"] == "a"


def test_replay_resends_delivered_events_with_new_message_ids(duck, emulator, instance):
    first = _run(instance)
    original = {e["userId"]: e for e in emulator.accepted}
    definitions = make_definitions(PROJECT)
    run = run_manual(definitions, "replay_t", instance, {"keys": ["1"]})
    assert run.success, run.failure_messages()
    replayed = emulator.accepted[-1]
    assert replayed["userId"] == "a" and replayed["messageId"].startswith(original["a"]["messageId"] + "-replay-")
    assert replayed["properties"] == original["a"]["properties"]
    run = run_manual(definitions, "replay_t", instance, {"run": first.result.run_id})
    assert run.metadata()["events_sent"] == 2
    assert not run_manual(definitions, "replay_t", instance, {}).success  # neither keys nor a run: nothing to do


def test_the_log_command_prints_rows_and_calls(duck, emulator, instance, state_dir, capsys):
    run = _run(instance)
    assert cli(["log", "t", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"run {run.result.run_id}: 3 rows" in out and "| 3 | added |  |  | rejected | no user id" in out
    assert cli(["log", "t", "--state-dir", str(state_dir), "--key", "1"]) == 0
    assert "| 1 | added | Added |" in capsys.readouterr().out
    assert cli(["log", "t", "--state-dir", str(state_dir), "--calls"]) == 0
    assert "| 1 | 1 | 200 |  |" in capsys.readouterr().out
    assert cli(["log", "nope", "--state-dir", str(state_dir)]) == 2


def test_after_a_reset_the_next_run_is_an_initial_one(duckdb_warehouse, state_dir, emulator, instance, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute("create table src as select i as id, 'u' || i as uid, 'v' as v from range(1, 31) t(i)")
    quiet = {"models": PROJECT["models"], "syncs": [{**TRACK, "send_initial": False}]}
    assert _run(instance, project=quiet).success  # the baseline: 30 rows recorded, nothing sent
    assert _run(instance, project=quiet, diff={"reset": True}).success
    run = _run(instance, project=quiet)  # initial again: no flood of 30 "added" events, and the guard stays quiet
    assert run.success, run.failure_messages()
    assert run.metadata("diff", "t")["initial_run"] and emulator.accepted == []
