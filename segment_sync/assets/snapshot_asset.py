"""snapshot/<model>: the model read from the warehouse into Parquet, with its blocking primary key check."""

import dagster as dg

from segment_sync.assets.names import AssetOptions, engine_kinds, snapshot_key, stage_group
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.spec import Engine, ModelSpec


def build_snapshot_asset(
    model: ModelSpec,
    options: AssetOptions,
    upstream: list[dg.AssetKey],
    automation: dg.AutomationCondition | None,
    hashed_columns: list[list[str]] | None = None,
    engine: Engine = "polars",
    *,
    preview_values: bool = False,
) -> dg.AssetsDefinition:
    """The asset that snapshots a model (Parquet, or a warehouse table on the warehouse engine), with its blocking
    primary key check.

    `upstream` are the warehouse tables it reads and the assets its syncs run after. `hashed_columns` are the column
    sets the model's syncs send: a Parquet snapshot keeps a row hash for each. Its preview shows row values only
    with `preview_values` (every sync of the model opts in).
    """
    key = snapshot_key(model.name)
    keys = options.resource_keys
    check = dg.AssetCheckSpec(
        PK_CHECK, asset=key, blocking=True, description=f"No two rows share a {model.key_columns} value."
    )

    @dg.asset(
        key=key,
        deps=upstream,
        group_name=stage_group(options.group_name, "snapshot"),
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

        return materialize_snapshot(context, keys, model, hashed_columns or [], preview_values)

    return _snapshot
