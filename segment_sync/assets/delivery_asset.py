"""segment/<sync>: the diff turned into events and delivered, or a dry run, test row or replay."""

import dagster as dg

from segment_sync.assets.names import AssetOptions, diff_key, segment_key, sync_pool
from segment_sync.assets.run_config import DELIVERY_CONFIG_SCHEMA, DeliveryConfig
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
        group_name=options.group_name,
        owners=list(options.owners),
        kinds={"segment"},
        automation_condition=automation,
        pool=sync_pool(sync.name),
        description=f"Events of sync `{sync.name}` ({sync.type}) delivered to Segment.",
        required_resource_keys={keys.state, keys.segment, keys.warehouse},
        config_schema=DELIVERY_CONFIG_SCHEMA,
    )
    def _segment(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # The events, the state and the HTTP client load when a sync delivers, not when the definitions load.
        from segment_sync.assets.delivery_step import materialize_delivery

        config = DeliveryConfig(**context.op_execution_context.op_config)
        return materialize_delivery(context, keys, config, sync, model, logs, engine)

    return _segment
