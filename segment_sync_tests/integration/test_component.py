"""The YAML component: loading, lineage, jobs and schedules, and clear errors for bad configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from segment_sync import SegmentSyncComponent
from segment_sync_tests.support.sync_runs import make_definitions, run_sync

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).with_name("dg")

GOOD = {
    "models": [{"name": "users", "table": "analytics.users", "primary_key": "user_id"}],
    "syncs": [
        {"name": "traits", "model": "users", "type": "identify", "user_id": "user_id", "schedule": "0 * * * *"},
        {"name": "gone", "model": "users", "type": "track", "user_id": "user_id", "events": {"removed": "Gone"}},
    ],
}


def _load(attributes: dict) -> dg.Definitions:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            return defs


def test_component_builds_assets_with_lineage_jobs_and_schedules():
    defs = _load(GOOD)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {
        "warehouse/analytics/users",
        "snapshot/users",
        "diff/traits",
        "segment/traits",
        "diff/gone",
        "segment/gone",
    }
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["snapshot", "users"])).parent_keys == {
        dg.AssetKey(["warehouse", "analytics", "users"])
    }
    assert graph.get(dg.AssetKey(["segment", "traits"])).parent_keys == {dg.AssetKey(["diff", "traits"])}
    assert graph.get(dg.AssetKey(["diff", "traits"])).parent_keys == {dg.AssetKey(["snapshot", "users"])}
    job = defs.resolve_job_def("sync_traits")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "snapshot/users",
        "diff/traits",
        "segment/traits",
    }
    [schedule] = defs.schedules
    assert (schedule.name, schedule.cron_schedule) == ("sync_traits_schedule", "0 * * * *")
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {
        ("snapshot/users", "primary_key_unique"),
        ("diff/traits", "change_within_limits"),
        ("diff/gone", "change_within_limits"),
    }


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({**GOOD, "syncs": [{**GOOD["syncs"][0], "type": "alias"}]}, "type"),
        (
            {**GOOD, "syncs": [GOOD["syncs"][0], {**GOOD["syncs"][1], "name": "traits"}]},
            "defs.yaml: attributes.syncs[1].name: two syncs are named 'traits'",
        ),
        (
            {**GOOD, "syncs": [{**GOOD["syncs"][0], "schedule": "every hour"}]},
            "defs.yaml: attributes.syncs[0].schedule: sync 'traits' has schedule 'every hour', which is not a valid",
        ),
        ({**GOOD, "models": [{"name": "users", "table": "analytics.users"}]}, "primary_key"),
        ({**GOOD, "models": [{"name": "users", "table": "t", "primary_key": []}]}, "at least one column"),
        (
            {**GOOD, "syncs": [{**GOOD["syncs"][0], "model": "usrs"}]},
            "attributes.syncs[0].model: sync 'traits' reads model 'usrs', which is not defined (models: users)",
        ),
        ({**GOOD, "syncs": [{**GOOD["syncs"][0], "user_idd": "x"}]}, "user_idd"),
        ({**GOOD, "syncs": [{**GOOD["syncs"][0], "name": "Traits!"}]}, "not a valid name"),
        ({**GOOD, "syncs": [{**GOOD["syncs"][1], "events": {}}]}, "at least one event name"),
        ({**GOOD, "executor": "multiprocessing"}, "'in_process' or 'project_default'"),
        ({**GOOD, "engine": "spark"}, "'polars' or 'warehouse'"),
        ({**GOOD, "warehouse": {"lease_seconds": 2}}, "warehouse.lease_seconds is 2; use 5 or more"),
        (
            {**GOOD, "syncs": [GOOD["syncs"][0], {**GOOD["syncs"][1], "engine": "warehouse"}]},
            "the syncs of model 'users' use both engines",
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(attributes, expected):
    with pytest.raises(Exception) as info:
        _load(attributes)
    text = "".join(str(e) for e in _chain(info.value))
    assert expected in text


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_the_warehouse_engine_shows_in_the_assets_kinds():
    defs = _load({**GOOD, "engine": "warehouse", "warehouse": {"kind": "postgres", "state_schema": "ops_sync"}})
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["snapshot", "users"])).kinds == {"sql", "postgres"}
    assert graph.get(dg.AssetKey(["diff", "traits"])).kinds == {"sql", "postgres"}
    assert "snapshot__users" in graph.get(dg.AssetKey(["snapshot", "users"])).description


def test_the_factory_and_the_component_agree():
    factory_keys = make_definitions(GOOD).resolve_all_asset_keys()
    assert set(factory_keys) == set(_load(GOOD).resolve_all_asset_keys())


def _dg(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_yaml_rejects_a_typo_naming_the_file_and_line(tmp_path):
    project = tmp_path / "proj"
    (project / "proj" / "defs" / "syncs").mkdir(parents=True)
    (project / "proj" / "__init__.py").write_text("")
    (project / "proj" / "defs" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "proj"
            version = "0"
            [tool.dg]
            directory_type = "project"
            [tool.dg.project]
            root_module = "proj"
            """
        )
    )
    defs_yaml = project / "proj" / "defs" / "syncs" / "defs.yaml"
    defs_yaml.write_text(
        textwrap.dedent(
            """
            type: segment_sync.SegmentSyncComponent
            attributes:
              models:
                - name: users
                  table: users
                  primary_kee: user_id
              syncs: []
            """
        )
    )
    result = _dg(["check", "yaml"], project)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "defs.yaml:" in out and "primary_kee" in out


def test_dg_check_defs_passes_on_this_repo():
    result = _dg(["check", "defs"], REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def _dg_launch(target: list[str], home: Path) -> None:
    env = {**os.environ, "SEGMENT_SYNC_STATE_DIR": str(home / "state"), "DAGSTER_HOME": str(home)}
    env.pop("WAREHOUSE_URL", None)
    env.pop("SEGMENT_DESTINATION", None)
    command = [str(DG), "launch", *target]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _step_processes(home: Path) -> tuple[set[int], set[int]]:
    """The processes the latest run started in, and those its steps ran in, from the run's event log."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs(limit=1)
        assert run.is_success
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
    run_pids = {e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START}
    step_pids = {e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    return run_pids, step_pids


def test_dg_launch_runs_the_demo_sync_end_to_end_in_the_runs_process(tmp_path):
    _dg_launch(["--job", "sync_user_traits"], tmp_path)
    [body] = (tmp_path / "state" / "outbox" / "user_traits.jsonl").read_text().splitlines()
    events = json.loads(body)["batch"]
    assert len(events) == 20 and {e["type"] for e in events} == {"identify"}
    assert events[0]["traits"] == {"email": "user1@example.com", "name": "User 1", "plan": "pro"}
    run_pids, step_pids = _step_processes(tmp_path)
    assert len(run_pids) == 1 and step_pids == run_pids  # no process of its own for each step


def test_materializing_the_demos_assets_runs_every_step_in_the_runs_process(tmp_path):
    _dg_launch(["--assets", "key:snapshot/users or key:diff/user_traits or key:segment/user_traits"], tmp_path)
    run_pids, step_pids = _step_processes(tmp_path)
    assert len(run_pids) == 1 and step_pids == run_pids


def test_the_executor_attribute_sets_the_code_locations_default_executor_only_when_asked():
    assert _load({**GOOD, "executor": "in_process"}).executor is dg.in_process_executor
    defs = _load(GOOD)
    assert defs.executor is None  # the project's own default executor stays
    assert defs.resolve_job_def("sync_traits").executor_def is dg.in_process_executor  # sync jobs: always


def test_two_components_that_both_run_in_process_load_into_one_code_location():
    other = {
        "executor": "in_process",
        "group_name": "other_syncs",
        "models": [{"name": "accounts", "table": "analytics.accounts", "primary_key": "account_id"}],
        "syncs": [{"name": "accounts", "model": "accounts", "type": "group", "user_id": "owner", "group_id": "id"}],
    }
    merged = dg.Definitions.merge(_load({**GOOD, "executor": "in_process"}), _load(other))
    assert merged.executor is dg.in_process_executor
    assert {j.name for j in merged.jobs} >= {"sync_traits", "sync_gone", "sync_accounts"}


def test_a_mapping_to_a_missing_column_names_the_file_and_field(
    duckdb_warehouse, state_dir, emulator, instance, monkeypatch
):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute("create table users as select 'u1' as user_id")
    attributes = {**GOOD, "models": [{"name": "users", "table": "users", "primary_key": "user_id"}]}
    attributes["syncs"] = [{**GOOD["syncs"][0], "fields": ["emial"]}]
    run = run_sync(_load(attributes), "traits", instance)
    assert not run.success
    [message] = run.failure_messages()
    assert "model 'users' has no column 'emial'" in message
    assert "defs.yaml: attributes.syncs[0])" in message
    assert emulator.requests == []


def test_after_runs_the_sync_once_its_upstream_materializes(instance):
    project = {
        "models": [{"name": "users", "table": "analytics.users", "primary_key": "user_id"}],
        "syncs": [{**GOOD["syncs"][0], "schedule": None, "after": ["dbt/users"]}, GOOD["syncs"][1]],
    }
    defs = make_definitions(project)
    sensor = next(s for s in defs.sensors if s.name == "segment_sync_after_upstream")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0  # nothing until dbt/users materializes
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["dbt", "users"])))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    requested = {r.key.to_user_string() for r in result.results if r.true_subset.size}
    assert requested == {"snapshot/users", "diff/traits", "segment/traits"}  # not the sync without `after`


def test_a_schedule_can_start_stopped():
    defs = make_definitions({**GOOD, "syncs": [{**GOOD["syncs"][0], "schedule_status": "stopped"}]})
    [schedule] = defs.schedules
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_sql_models_read_their_tables_the_stages_are_groups_and_each_sync_has_manual_jobs():
    sql = "select * from analytics.users join analytics.plans using (plan_id)"
    defs = _load({**GOOD, "models": [{"name": "users", "sql": sql, "primary_key": "user_id"}]})
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["snapshot", "users"])).parent_keys == {
        dg.AssetKey(["warehouse", "analytics", "users"]),
        dg.AssetKey(["warehouse", "analytics", "plans"]),
    }
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["warehouse/analytics/plans"] == "segment_sync_warehouse"
    assert (groups["snapshot/users"], groups["diff/gone"], groups["segment/gone"]) == (
        "segment_sync_snapshot",
        "segment_sync_diff",
        "segment_sync_segment",
    )
    assert "also read by `gone`" in graph.get(dg.AssetKey(["diff", "traits"])).description
    for kind in ("dry_run", "test_row", "replay"):
        job = defs.resolve_job_def(f"{kind}_traits")
        assert job.run_tags == {"segment_sync/manual": kind, "segment_sync/sync": "traits"}
        assert job.description and "traits" in job.description
        assert not job.asset_layer.selected_asset_keys  # it materializes nothing
    assert "dry_run_traits" in defs.resolve_job_def("sync_traits").description
