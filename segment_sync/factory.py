"""Plain factory: a validated project of models and syncs -> Dagster definitions."""

from __future__ import annotations

import dagster as dg

from segment_sync.alerts.settings import AlertSettings
from segment_sync.assets import (
    AssetOptions,
    build_diff_asset,
    build_segment_asset,
    build_snapshot_asset,
    diff_key,
    segment_key,
    snapshot_key,
    stage_group,
    table_key,
)
from segment_sync.assets.manual_jobs import build_manual_jobs
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.sensors import build_alert_sensors
from segment_sync.spec import LogSettings, ModelSpec, ProjectSpec, SyncSpec


def build_definitions(
    project: ProjectSpec,
    *,
    warehouse: WarehouseResource,
    segment: SegmentResource,
    state: StateResource,
    options: AssetOptions | None = None,
    logs: LogSettings | None = None,
    alerts: AlertSettings | None = None,
    source: str | None = None,
    in_process: bool = False,
) -> dg.Definitions:
    """Assets, checks, one job per sync with its schedule, the automation sensor, and the resources they need.

    `source` names where the syncs were declared (a defs.yaml), for error messages. The sync jobs run their steps
    in the run's process; `in_process` makes that the code location's default too (the UI's Materialize, `dg
    launch --assets` and automation runs), where a project may have only one default executor.
    """
    options = options or AssetOptions()
    resource_keys = options.resource_keys
    kinds = {options.warehouse_kind} if options.warehouse_kind else set()
    read = {m.name: model_tables(m, options.warehouse_kind) for m in project.models}
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = [
        dg.AssetSpec(
            table_key(t),
            group_name=stage_group(options.group_name, "warehouse"),
            kinds=kinds,
            description=f"Table `{t}` of the warehouse, read by model "
            + ", ".join(f"`{m}`" for m, tables in read.items() if t in tables)
            + " (not materialized by Dagster).",
        )
        for t in sorted({t for tables in read.values() for t in tables})
    ]
    for model in project.models:
        syncs = [s for s in project.syncs if s.model == model.name]
        upstream = sorted({a for s in syncs for a in s.after})
        keys = [dg.AssetKey.from_user_string(a) for a in upstream]
        automation = _after(dg.AssetSelection.assets(*keys)) if keys else None
        hashed = [s.compared_columns for s in syncs]
        deps = [table_key(t) for t in read[model.name]] + keys
        values = bool(syncs) and all(s.preview_values for s in syncs)
        engine = project.model_engine(model.name)
        assets.append(build_snapshot_asset(model, options, deps, automation, hashed, engine, preview_values=values))
    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = []
    schedules = []
    for i, sync in enumerate(project.syncs):
        declared = f"{source}: attributes.syncs[{i}]" if source else f"syncs[{i}]"
        automation = _after(dg.AssetSelection.all()) if sync.after else None
        model = project.model(sync.model)
        engine = project.engine_of(sync)
        shared = [s.name for s in project.syncs if s.model == sync.model and s.name != sync.name]
        assets += [
            build_diff_asset(sync, model, options, declared, automation, engine, shared_with=shared),
            build_segment_asset(sync, model, options, logs or LogSettings(), automation, engine),
        ]
        jobs += build_manual_jobs(sync, model, options, logs or LogSettings(), declared, engine)
        job = dg.define_asset_job(
            f"sync_{sync.name}",
            selection=dg.AssetSelection.assets(snapshot_key(sync.model), diff_key(sync.name), segment_key(sync.name)),
            description=f"Snapshot model `{sync.model}`, diff it and deliver sync `{sync.name}` to Segment. To see "
            f"what it would send first: the job `dry_run_{sync.name}`; to send one row: `test_row_{sync.name}`.",
            executor_def=dg.in_process_executor,  # three steps in a row: a process each would cost more than most runs
        )
        jobs.append(job)
        if sync.schedule:
            schedules.append(_schedule(i, sync, job))
    automated = [
        a.key for a in assets if isinstance(a, dg.AssetsDefinition) and a.automation_conditions_by_key.get(a.key)
    ]
    sensors = [_automation_sensor(options.group_name, automated)] if automated else []
    alerts = alerts or AlertSettings()
    if alerts.enabled:
        sensors += build_alert_sensors(project.syncs, state, alerts, prefix=options.group_name)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={resource_keys.warehouse: warehouse, resource_keys.segment: segment, resource_keys.state: state},
        executor=dg.in_process_executor if in_process else None,
    )


def model_tables(model: ModelSpec, kind: str | None) -> list[str]:
    """The warehouse tables a model reads: its `table`, or those its SQL names (parsed; the warehouse is not asked)."""
    if model.table:
        return [model.table]
    from segment_sync.warehouse.sql_tables import read_tables

    return read_tables(model.query, kind)


def _after(upstream: dg.AssetSelection) -> dg.AutomationCondition:
    # Not eager(): that also waits for the warehouse table assets, which are never materialized in Dagster.
    updated = dg.AutomationCondition.any_deps_updated().allow(upstream)
    return (updated & ~dg.AutomationCondition.in_progress()).with_label("after upstream updates")


def _automation_sensor(group_name: str, keys: list[dg.AssetKey]) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        f"{group_name}_after_upstream",
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the syncs that have `after:` once their upstream assets materialize.",
    )


def _schedule(index: int, sync: SyncSpec, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    status = dg.DefaultScheduleStatus.RUNNING if sync.schedule_status == "running" else dg.DefaultScheduleStatus.STOPPED
    try:
        return dg.ScheduleDefinition(
            name=f"sync_{sync.name}_schedule",
            job=job,
            cron_schedule=sync.schedule,
            execution_timezone="UTC",
            default_status=status,
        )
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(
            f"syncs[{index}].schedule: sync {sync.name!r} has schedule {sync.schedule!r}, which is not a valid cron "
            "expression"
        ) from None
