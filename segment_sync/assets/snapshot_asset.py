"""snapshot/<model>: the model read from the warehouse into Parquet, with its blocking primary key check."""

import dagster as dg

from segment_sync.assets.names import AssetOptions, engine_kinds, snapshot_key, table_key
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.spec import Engine, ModelSpec


def build_snapshot_asset(
    model: ModelSpec,
    options: AssetOptions,
    upstream: list[dg.AssetKey],
    automation: dg.AutomationCondition | None,
    hashed_columns: list[list[str]] | None = None,
    engine: Engine = "polars",
) -> dg.AssetsDefinition:
    """The asset that snapshots a model (Parquet, or a warehouse table on the warehouse engine), with its blocking
    primary key check.

    `hashed_columns` are the column sets the model's syncs send: a Parquet snapshot keeps a row hash for each.
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
        kinds=engine_kinds(engine, options.warehouse_kind),
        automation_condition=automation,
        check_specs=[check],
        description=f"Rows of model `{model.name}`, read from the warehouse into Parquet."
        if engine == "polars"
        else f"Rows of model `{model.name}`, copied into table `snapshot__{model.name}` of the warehouse engine's "
        "schema (engine: warehouse).",
        required_resource_keys={keys.warehouse, keys.state, keys.segment},
    )
    def _snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # Polars and the warehouse drivers load when a snapshot is taken, not when the definitions load.
        if engine == "warehouse":
            from segment_sync.assets.warehouse_snapshot_step import materialize_warehouse_snapshot

            return materialize_warehouse_snapshot(context, keys, model)
        from segment_sync.assets.snapshot_step import materialize_snapshot

        return materialize_snapshot(context, keys, model, hashed_columns or [])

    return _snapshot
