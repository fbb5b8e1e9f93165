"""diff/<sync>: what changed since the sync last delivered, with its blocking guard."""

from collections.abc import Sequence

import dagster as dg

from segment_sync.assets.names import AssetOptions, diff_key, snapshot_key, stage_group, sync_pool
from segment_sync.assets.run_config import DIFF_CONFIG_SCHEMA, GUARD_CHECK, DiffConfig
from segment_sync.spec import Engine, ModelSpec, SyncSpec


def build_diff_asset(
    sync: SyncSpec,
    model: ModelSpec,
    options: AssetOptions,
    declared: str,
    automation: dg.AutomationCondition | None,
    engine: Engine = "polars",
    *,
    shared_with: Sequence[str] = (),
) -> dg.AssetsDefinition:
    """The asset that diffs a model snapshot against what the sync last delivered, with its blocking guard.

    `declared` says where the sync is configured, for the error about a column the model lacks; `shared_with` names
    the other syncs of the model, which the description mentions.
    """
    key = diff_key(sync.name)
    keys = options.resource_keys
    guard = dg.AssetCheckSpec(
        GUARD_CHECK,
        asset=key,
        blocking=True,
        description=f"The diff is not suspiciously large: at most {sync.max_removed_percent:g}% of the rows last "
        f"delivered removed and {sync.max_added_percent:g}% added (changes of fewer than {sync.guard_min_rows} rows "
        "always pass); and no sent column changed its kind of value.",
    )

    @dg.asset(
        key=key,
        deps=[snapshot_key(model.name)],
        group_name=stage_group(options.group_name, "diff"),
        owners=list(options.owners),
        kinds={"polars"}
        if engine == "polars"
        else {"sql", *([options.warehouse_kind] if options.warehouse_kind else [])},
        automation_condition=automation,
        check_specs=[guard],
        pool=sync_pool(sync.name),
        description=f"Rows of `{model.name}` added, changed or removed since sync `{sync.name}` last delivered."
        + _shared_note(model.name, shared_with, engine),
        required_resource_keys={keys.state, keys.segment, keys.warehouse},
        config_schema=DIFF_CONFIG_SCHEMA,
    )
    def _diff(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # Polars and the diff load when a diff is computed, not when the definitions load.
        from segment_sync.assets.diff_step import materialize_diff

        config = DiffConfig(**context.op_execution_context.op_config)
        if engine == "warehouse":
            from segment_sync.assets.warehouse_diff_step import materialize_warehouse_diff

            return materialize_warehouse_diff(context, keys, config, sync, model, declared)
        return materialize_diff(context, keys, config, sync, model, declared)

    return _diff


def _shared_note(model: str, others: Sequence[str], engine: Engine) -> str:
    if not others:
        return ""
    shared = (
        f" Model `{model}` is also read by {', '.join(f'`{o}`' for o in others)}, whose runs take its snapshot again"
    )
    if engine == "warehouse":
        return shared + ": after one of them this shows Unsynced until this sync runs."
    return (
        shared + ". This shows Unsynced only when that snapshot holds changes (unchanged rows read again keep the "
        "snapshot's data version); this sync's next run sends them."
    )
