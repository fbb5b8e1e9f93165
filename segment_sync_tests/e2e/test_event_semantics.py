"""Events mean what a Hightouch user expects: what counts as a change, when removals happen, whose ids are reused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from segment_sync.delivery.diff_delivery import _recorder
from segment_sync.segment_api.batching import Joined
from segment_sync_tests.support.segment_emulator import SegmentEmulator
from segment_sync_tests.support.sync_runs import make_definitions, run_manual, run_sync


def _project(warehouse: Path, **sync: Any) -> dict[str, Any]:
    spec = {
        "name": "t",
        "model": "m",
        "type": "track",
        "user_id": "uid",
        "fields": ["plan"],
        "events": {"added": "Added", "changed": "Changed", "removed": "Removed"},
        "send_initial": True,
        **sync,
    }
    return {"models": [{"name": "m", "table": "users", "primary_key": "id"}], "syncs": [spec]}


def _warehouse(tmp_path: Path, monkeypatch: Any, *statements: str) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        for statement in statements:
            conn.execute(statement)
    monkeypatch.setenv("WAREHOUSE_URL", f"duckdb:///{path}")
    return path


def _execute(path: Path, *statements: str) -> None:
    with duckdb.connect(str(path)) as conn:
        for statement in statements:
            conn.execute(statement)


def test_a_change_only_in_the_timestamp_or_message_id_column_is_not_a_change(
    state_dir: Path, emulator: SegmentEmulator, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> None:
    path = _warehouse(
        tmp_path,
        monkeypatch,
        "create table users (id int, uid varchar, plan varchar, updated_at timestamp, event_id varchar)",
        "insert into users values (1, 'u1', 'free', '2026-01-01', 'e1'), (2, 'u2', 'pro', '2026-01-01', 'e2')",
    )
    definitions = make_definitions(_project(path, timestamp="updated_at", message_id="event_id"))
    assert run_sync(definitions, "t", instance).success
    assert len(emulator.accepted) == 2
    _execute(path, "update users set updated_at = '2026-02-01', event_id = 'e1-bis' where id = 1")
    run = run_sync(definitions, "t", instance)
    assert run.success, run.failure_messages()
    assert len(emulator.accepted) == 2, "an updated_at bump sends nothing"
    _execute(path, "update users set plan = 'team', updated_at = '2026-03-01' where id = 1")
    assert run_sync(definitions, "t", instance).success
    changed = emulator.events_named("Changed")
    assert [(e["userId"], e["properties"], e["timestamp"]) for e in changed] == [
        ("u1", {"plan": "team"}, "2026-03-01T00:00:00.000Z")
    ]


def _run(definitions: dg.Definitions, instance: dg.DagsterInstance, **ops: dict[str, Any]) -> Any:
    config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}, "ops": ops}
    result = definitions.resolve_job_def("sync_t").execute_in_process(
        instance=instance, raise_on_error=False, run_config=config
    )
    assert result.success
    return result


def test_a_message_id_column_is_used_only_for_its_rows_first_delivery(
    state_dir: Path, emulator: SegmentEmulator, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> None:
    path = _warehouse(
        tmp_path,
        monkeypatch,
        "create table users (id int, uid varchar, plan varchar, event_id varchar)",
        "insert into users values (1, 'u1', 'free', 'e1'), (2, 'u2', 'pro', 'e2')",
    )
    definitions = make_definitions(_project(path, message_id="event_id"))
    _run(definitions, instance)
    assert sorted(e["messageId"] for e in emulator.accepted) == ["e1", "e2"]
    assert run_manual(definitions, "test_row_t", instance, {"key": "1"}).success
    _run(definitions, instance, diff__t={"config": {"full_resync": True}})
    _execute(path, "delete from users where id = 2")
    _run(definitions, instance)
    _execute(path, "insert into users values (2, 'u2', 'pro', 'e2')")
    _run(definitions, instance)
    ids = [e["messageId"] for e in emulator.accepted]
    assert len(ids) == 7 and len(set(ids)) == 7, "the test row, the resync and the return of u2 are new events"
    assert ids[2] not in ("e1", "e2") and {"e1", "e2"}.isdisjoint(ids[3:])
    assert [e["event"] for e in emulator.accepted[5:]] == ["Removed", "Added"]


def test_a_removed_row_carries_what_was_last_sent_timed_by_the_snapshot(
    state_dir: Path, emulator: SegmentEmulator, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> None:
    path = _warehouse(
        tmp_path,
        monkeypatch,
        "create table users (id int, uid varchar, plan varchar, updated_at timestamp)",
        "insert into users values (1, 'u1', 'free', '2020-01-01'), (2, 'u2', 'pro', '2020-01-01')",
    )
    events = {"added": "Added", "removed": "Removed"}  # no changed event: a change sends nothing
    definitions = make_definitions(_project(path, timestamp="updated_at", events=events))
    _run(definitions, instance)
    _execute(path, "update users set plan = 'team', updated_at = '2021-01-01' where id = 1")
    _run(definitions, instance)
    assert len(emulator.accepted) == 2
    started = dt.datetime.now(dt.UTC)
    _execute(path, "delete from users where id = 1")
    _run(definitions, instance)
    [removed] = emulator.events_named("Removed")
    assert removed["properties"] == {"plan": "free"}, "what was sent, not what the warehouse held last"
    sent_at = dt.datetime.fromisoformat(removed["timestamp"])
    assert started - dt.timedelta(seconds=1) <= sent_at <= dt.datetime.now(dt.UTC), "not backdated to 2021"


def test_an_audience_member_whose_id_changed_exits_as_the_old_identity_and_enters_as_the_new(
    state_dir: Path, emulator: SegmentEmulator, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> None:
    path = _warehouse(
        tmp_path,
        monkeypatch,
        "create table users (id int, uid varchar, plan varchar)",
        "insert into users values (1, 'u1', 'free'), (2, 'u2', 'pro')",
    )
    definitions = make_definitions(_project(path, type="audience", events=None))
    _run(definitions, instance)
    _execute(path, "update users set plan = 'team' where id = 1")  # a change an audience does not send
    _run(definitions, instance)
    _execute(
        path, "update users set uid = 'u9', plan = 'gold' where id = 1", "update users set uid = null where id = 2"
    )
    _run(definitions, instance)
    _execute(path, "delete from users where id = 1")
    _run(definitions, instance)
    _run(definitions, instance)  # u2 has no id now: its enter is rejected again, its exit not sent twice
    sent = [(e["event"], e["userId"], e["properties"]) for e in emulator.accepted]
    assert sent[:2] == [("Segment Entered", "u1", {"plan": "free"}), ("Segment Entered", "u2", {"plan": "pro"})]
    assert sorted(sent[2:5]) == [
        ("Segment Entered", "u9", {"plan": "gold"}),
        ("Segment Exited", "u1", {"plan": "free"}),
        ("Segment Exited", "u2", {"plan": "pro"}),
    ]
    assert sent[5:] == [("Segment Exited", "u9", {"plan": "gold"})]
    assert len({e["messageId"] for e in emulator.accepted}) == len(sent) == 6


def test_an_enter_is_noted_only_once_its_exit_is() -> None:
    lines = Joined.from_series(pl.Series([b"exit\n", b"other\n", b"enter\n"]))
    noted: list[bytes] = []

    class Store:
        def record_lines(self, parts: Any) -> None:
            noted.extend(bytes(p) for p in parts)

    record = _recorder(Store(), lines, {2: 0})  # type: ignore[arg-type]
    record([1, 2])  # the enter's batch is acknowledged first
    assert noted == [b"other\n"]
    record([0])
    assert b"".join(noted) == b"other\nexit\nenter\n"  # exit first: the enter's content is what the state keeps
