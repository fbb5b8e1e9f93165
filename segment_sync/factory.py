"""Plain factory: a validated project of models and syncs -> Dagster definitions."""

from __future__ import annotations

import dagster as dg

from segment_sync.assets import (
    SEGMENT,
    STATE,
    WAREHOUSE,
    build_diff_asset,
    build_segment_asset,
    build_snapshot_asset,
    diff_key,
    segment_key,
    snapshot_key,
    table_key,
)
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.spec import LogSettings, ProjectSpec


def build_definitions(
    project: ProjectSpec,
    *,
    warehouse: WarehouseResource,
    segment: SegmentResource,
    state: StateResource,
    group_name: str = "segment_sync",
    warehouse_kind: str | None = None,
    logs: LogSettings | None = None,
    source: str | None = None,
) -> dg.Definitions:
    """Assets, checks, one job per sync and its schedule, plus the resources they need.

    `source` names where the syncs were declared (a defs.yaml), for error messages.
    """
    tables = sorted({m.table for m in project.models if m.table})
    table_specs = [
        dg.AssetSpec(table_key(t), group_name=group_name, kinds={warehouse_kind} if warehouse_kind else set())
        for t in tables
    ]
    snapshots = {m.name: build_snapshot_asset(m, group_name) for m in project.models}
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = [*table_specs, *snapshots.values()]
    jobs, schedules = [], []
    for i, sync in enumerate(project.syncs):
        declared = f"{source}: attributes.syncs[{i}]" if source else f"syncs[{i}]"
        assets += [
            build_diff_asset(sync, project.model(sync.model), group_name, declared),
            build_segment_asset(sync, project.model(sync.model), group_name, logs or LogSettings()),
        ]
        job = dg.define_asset_job(
            f"sync_{sync.name}",
            selection=dg.AssetSelection.assets(snapshot_key(sync.model), diff_key(sync.name), segment_key(sync.name)),
            description=f"Snapshot model `{sync.model}`, diff it and deliver sync `{sync.name}` to Segment.",
        )
        jobs.append(job)
        if sync.schedule:
            schedules.append(_schedule(i, sync.name, sync.schedule, job))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        resources={WAREHOUSE: warehouse, SEGMENT: segment, STATE: state},
    )


def _schedule(index: int, sync_name: str, cron: str, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    try:
        return dg.ScheduleDefinition(
            name=f"sync_{sync_name}_schedule",
            job=job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(
            f"syncs[{index}].schedule: sync {sync_name!r} has schedule {cron!r}, which is not a valid cron expression"
        ) from None
