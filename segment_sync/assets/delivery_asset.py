"""segment/<sync>: the diff turned into events and delivered to Segment."""

import dagster as dg

from segment_sync.assets.names import AssetOptions, diff_key, segment_key, stage_group, sync_pool
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec


def build_segment_asset(
    sync: SyncSpec,
    model: ModelSpec,
    options: AssetOptions,
    logs: LogSettings,
    automation: dg.AutomationCondition | None,
    engine: Engine = "polars",
) -> dg.AssetsDefinition:
    """The asset that turns a sync's diff into events and delivers them."""
    keys = options.resource_keys

    @dg.asset(
        key=segment_key(sync.name),
        deps=[diff_key(sync.name)],
        group_name=stage_group(options.group_name, "segment"),
        owners=list(options.owners),
        kinds={"segment"},
        automation_condition=automation,
        pool=sync_pool(sync.name),
        description=f"Events of sync `{sync.name}` ({sync.type}) delivered to Segment. Only real deliveries "
        f"materialize it: dry runs, test rows and replays (jobs `dry_run_{sync.name}`, `test_row_{sync.name}`, "
        f"`replay_{sync.name}`) show as observations.",
        required_resource_keys={keys.state, keys.segment, keys.warehouse},
    )
    def _segment(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # The events, the state and the HTTP client load when a sync delivers, not when the definitions load.
        from segment_sync.assets.delivery_step import materialize_delivery

        return materialize_delivery(context, keys, sync, model, logs, engine)

    return _segment
