"""snapshot/<model>: the model read from the warehouse into Parquet, with its blocking primary key check."""

import dagster as dg

from segment_sync.assets.names import AssetOptions, snapshot_key, table_key
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.spec import ModelSpec


def build_snapshot_asset(
    model: ModelSpec,
    options: AssetOptions,
    upstream: list[dg.AssetKey],
    automation: dg.AutomationCondition | None,
    hashed_columns: list[list[str]] | None = None,
) -> dg.AssetsDefinition:
    """The asset that reads a model into a Parquet snapshot, with its blocking primary key check.

    `hashed_columns` are the column sets the model's syncs send: the snapshot keeps a row hash for each.
    """
    key = snapshot_key(model.name)
    keys = options.resource_keys
    check = dg.AssetCheckSpec(
        PK_CHECK, asset=key, blocking=True, description=f"No two rows share a {model.key_columns} value."
    )

    @dg.asset(
        key=key,
        deps=([table_key(model.table)] if model.table else []) + upstream,
        group_name=options.group_name,
        owners=list(options.owners),
        kinds={"polars", options.warehouse_kind} if options.warehouse_kind else {"polars"},
        automation_condition=automation,
        check_specs=[check],
        description=f"Rows of model `{model.name}`, read from the warehouse into Parquet.",
        required_resource_keys={keys.warehouse, keys.state, keys.segment},
    )
    def _snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # Polars and the warehouse drivers load when a snapshot is taken, not when the definitions load.
        from segment_sync.assets.snapshot_step import materialize_snapshot

        return materialize_snapshot(context, keys, model, hashed_columns or [])

    return _snapshot
