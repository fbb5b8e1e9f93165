"""Events mean what a Hightouch user expects: what counts as a change, when removals happen, whose ids are reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from segment_sync_tests.conftest import make_definitions, run_sync
from segment_sync_tests.segment_emulator import SegmentEmulator


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
    _run(definitions, instance, segment__t={"config": {"test_row": "1"}})
    _run(definitions, instance, diff__t={"config": {"full_resync": True}})
    _execute(path, "delete from users where id = 2")
    _run(definitions, instance)
    _execute(path, "insert into users values (2, 'u2', 'pro', 'e2')")
    _run(definitions, instance)
    ids = [e["messageId"] for e in emulator.accepted]
    assert len(ids) == 7 and len(set(ids)) == 7, "the test row, the resync and the return of u2 are new events"
    assert ids[2] not in ("e1", "e2") and {"e1", "e2"}.isdisjoint(ids[3:])
    assert [e["event"] for e in emulator.accepted[5:]] == ["Removed", "Added"]
