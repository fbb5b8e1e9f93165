"""Guards before sending, through the real assets: large changes, column kinds, duplicate keys, schema changes."""

from __future__ import annotations

import pytest

from segment_sync_tests.support.sync_runs import TRACK, make_definitions, run_sync


def _project(sync: dict | None = None, **model: object) -> dict:
    return {
        "models": [{"name": "m", "table": "src", "primary_key": "id", **model}],
        "syncs": [{**TRACK, **(sync or {})}],
    }


@pytest.fixture
def duck(duckdb_warehouse, state_dir, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    return duckdb_warehouse


def _seed(duck, rows: int = 20) -> None:
    duck.execute(f"create table src as select i as id, 'u' || i as uid, i as v from range(1, {rows + 1}) t(i)")


def _names(emulator, start: int) -> list[str]:
    return sorted(e["event"] for e in emulator.accepted[start:])


def test_mass_removal_stops_the_sync_until_approved(duck, emulator, instance):
    _seed(duck)
    definitions = make_definitions(_project())
    assert run_sync(definitions, "t", instance).success
    sent = len(emulator.accepted)
    duck.execute("delete from src where id > 5")

    run = run_sync(definitions, "t", instance)
    assert not run.success
    assert "segment/t" not in run.materialized()
    [check] = [c for c in run.result.get_asset_check_evaluations() if c.check_name == "change_within_limits"]
    assert not check.passed
    [problem] = check.metadata["problems"].value
    assert "15 rows would be newly removed, 75% of the 20 rows last delivered (max_removed_percent is 50)" in problem
    assert "approve_large_change" in check.description
    assert len(emulator.accepted) == sent

    assert not run_sync(definitions, "t", instance).success  # it keeps stopping until someone approves
    run = run_sync(definitions, "t", instance, approve=True)
    assert run.success
    assert _names(emulator, sent) == ["Removed"] * 15
    assert run_sync(definitions, "t", instance).success  # back to normal: nothing left to send


def test_a_key_that_changed_format_stops_the_sync(duck, emulator, instance):
    _seed(duck, 12)
    definitions = make_definitions(_project({"max_added_percent": 90}))
    assert run_sync(definitions, "t", instance).success
    duck.execute("update src set id = id + 1000")
    run = run_sync(definitions, "t", instance)
    assert not run.success
    problems = next(c for c in run.result.get_asset_check_evaluations() if c.check_name == "change_within_limits")
    text = " ".join(problems.metadata["problems"].value)
    assert "12 rows would be newly added" in text and "changed type or format" in text
    assert "12 rows would be newly removed" in text


def test_limits_are_settable_and_small_changes_pass(duck, emulator, instance):
    _seed(duck)
    definitions = make_definitions(_project({"max_removed_percent": 80}))
    assert run_sync(definitions, "t", instance).success
    duck.execute("delete from src where id > 5")
    assert run_sync(definitions, "t", instance).success  # 75% is under this sync's 80%
    duck.execute("delete from src where id > 1")
    assert run_sync(definitions, "t", instance).success  # 4 of 5 rows, but under guard_min_rows (10)


def test_a_sent_column_changing_kind_stops_the_sync(duck, emulator, instance):
    _seed(duck, 3)
    definitions = make_definitions(_project())
    assert run_sync(definitions, "t", instance).success
    duck.execute("alter table src alter v type varchar")
    run = run_sync(definitions, "t", instance)
    assert not run.success
    check = next(c for c in run.result.get_asset_check_evaluations() if c.check_name == "change_within_limits")
    assert check.metadata["problems"].value == [
        "column 'v' changed from integer to string: every row would look changed"
    ]
    sent = len(emulator.accepted)
    assert run_sync(definitions, "t", instance, approve=True).success
    assert _names(emulator, sent) == ["Changed"] * 3 and emulator.accepted[-1]["properties"]["v"] == "3"
    assert run_sync(definitions, "t", instance).success  # the new kind is now the expected one


def test_unsent_column_added_and_a_renamed_key_column_send_nothing(duck, emulator, instance):
    _seed(duck, 3)
    assert run_sync(make_definitions(_project()), "t", instance).success
    sent = len(emulator.accepted)
    duck.execute("alter table src add column extra varchar default 'new'", "alter table src rename id to user_key")
    run = run_sync(make_definitions(_project(primary_key="user_key")), "t", instance)
    assert run.success
    assert run.metadata("diff", "t")["dagster/row_count"] == 0 and len(emulator.accepted) == sent


def test_a_dropped_sent_column_is_a_clear_error(duck, emulator, instance):
    _seed(duck, 3)
    definitions = make_definitions(_project())
    assert run_sync(definitions, "t", instance).success
    duck.execute("alter table src drop column v")
    run = run_sync(definitions, "t", instance)
    assert not run.success
    assert "sync 't': model 'm' has no column 'v'" in run.failure_messages()[0]


@pytest.mark.parametrize(("policy", "expected"), [("keep_last", "late"), ("keep_first", "early")])
def test_duplicate_key_policy_keeps_one_row_and_reports_the_rest(duck, emulator, instance, policy, expected):
    duck.execute(
        "create table src as select * from (values (1, 'a', 'early', 1), (1, 'a', 'late', 2), (2, 'b', 'x', 1),"
        " (1, 'a', 'middle', 1)) t(id, uid, v, seq)"
    )
    run = run_sync(make_definitions(_project(on_duplicate_key=policy, order_by="seq")), "t", instance)
    assert run.success, run.failure_messages()
    snapshot = run.metadata("snapshot", "m")
    assert (snapshot["duplicate_rows_dropped"], snapshot["duplicate_rows_dropped_keys"]) == (2, ["1"])
    assert sorted((e["userId"], e["properties"]["v"]) for e in emulator.accepted) == [("a", expected), ("b", "x")]


def test_a_failing_query_names_the_model_and_leaves_state_untouched(duck, emulator, instance, state_dir):
    _seed(duck, 3)
    assert run_sync(make_definitions(_project()), "t", instance).success
    meta_before = (state_dir / "syncs" / "t" / "meta.json").read_bytes()
    delivered_before = (state_dir / "syncs" / "t" / "delivered.parquet").read_bytes()
    broken = {
        "models": [{"name": "m", "sql": "select * from src where no_such_column > 1", "primary_key": "id"}],
        "syncs": [TRACK],
    }
    run = run_sync(make_definitions(broken), "t", instance)
    assert not run.success
    assert (
        "model 'm': reading from duckdb" in run.failure_messages()[0] and "no_such_column" in run.failure_messages()[0]
    )
    assert (state_dir / "syncs" / "t" / "meta.json").read_bytes() == meta_before
    assert (state_dir / "syncs" / "t" / "delivered.parquet").read_bytes() == delivered_before


def test_rows_rejected_every_run_do_not_trip_the_guard(duck, emulator, instance):
    duck.execute(
        "create table src as select i as id, case when i <= 12 then 'u' || i end as uid, i as v from range(1, 43) t(i)"
    )
    definitions = make_definitions(_project())
    first = run_sync(definitions, "t", instance)
    assert first.metadata("segment", "t")["rows_rejected"] == 30
    second = run_sync(definitions, "t", instance)  # the same 30 rows are "added" again: retries, not new rows
    assert second.success, second.failure_messages()
    assert second.metadata("segment", "t")["rows_rejected"] == 30 and len(emulator.accepted) == 12


@pytest.mark.parametrize(
    ("diff", "reason"),
    [
        (None, "the sync's first run sends every row as added"),
        ({"full_resync": True}, "a full resync sends every row again, as asked"),
        ({"reset": True}, "a reset sends nothing and starts the sync's state over"),
    ],
)
def test_the_guard_says_when_its_size_limits_do_not_apply(duck, emulator, instance, diff, reason):
    _seed(duck)
    definitions = make_definitions(_project())
    if diff:
        assert run_sync(definitions, "t", instance).success
    run = run_sync(definitions, "t", instance, diff=diff)
    assert run.success, run.failure_messages()
    [check] = [c for c in run.result.get_asset_check_evaluations() if c.check_name == "change_within_limits"]
    assert check.passed and check.description.startswith(f"Size limits not applied: {reason}.")
    assert check.metadata["size_limits_applied"].value is False
    again = run_sync(definitions, "t", instance)
    [check] = [c for c in again.result.get_asset_check_evaluations() if c.check_name == "change_within_limits"]
    if diff == {"reset": True}:  # the run after a reset is a first run again
        assert check.description.startswith("Size limits not applied: the sync's first run")
    else:
        assert check.description.startswith("Within limits") and check.metadata["size_limits_applied"].value is True
