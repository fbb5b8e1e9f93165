"""snapshot/<model>: the model read from the warehouse into Parquet, with its blocking primary key check."""

import dagster as dg

from segment_sync.assets.layout import (
    SEGMENT,
    STATE,
    WAREHOUSE,
    AssetOptions,
    snapshot_key,
    snapshot_path,
    state_of,
    table_key,
    warehouse_of,
)
from segment_sync.metadata import markdown_table, schema_metadata
from segment_sync.snapshot import drop_duplicate_keys, key_problems, missing_columns
from segment_sync.spec import ModelSpec
from segment_sync.state import write_parquet_atomic
from segment_sync.warehouse import WarehouseError, read_model

PK_CHECK = "primary_key_unique"


def build_snapshot_asset(
    model: ModelSpec, options: AssetOptions, upstream: list[dg.AssetKey], automation: dg.AutomationCondition | None
) -> dg.AssetsDefinition:
    """The asset that reads a model into a Parquet snapshot, with its blocking primary key check."""
    key = snapshot_key(model.name)
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
        required_resource_keys={WAREHOUSE, STATE, SEGMENT},
    )
    def _snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        root = state_of(context).root()
        try:
            frame = read_model(warehouse_of(context).url(root), model)
        except WarehouseError as exc:
            raise dg.Failure(str(exc)) from None
        missing = missing_columns(frame, model.key_columns)
        if missing:
            raise dg.Failure(f"model {model.name!r}: the query returns no primary key column {missing}")
        frame, dropped, dropped_keys = drop_duplicate_keys(frame, model)
        path = snapshot_path(root, model.name)
        write_parquet_atomic(frame, path)
        problems = key_problems(frame, model.key_columns)
        policy = {
            "duplicate_rows_dropped": dropped,
            "duplicate_rows_dropped_keys": dg.MetadataValue.json(dropped_keys),
            "null_key_rows": problems.null_rows,
        }
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                **schema_metadata(frame),
                **policy,
                "preview": dg.MetadataValue.md(markdown_table(frame.head(10))),
                "path": dg.MetadataValue.path(str(path)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=PK_CHECK,
                    passed=problems.duplicate_keys == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=None
                    if problems.duplicate_keys == 0
                    else f"{problems.duplicate_keys} primary keys appear more than once: nothing is sent until "
                    "the model's key is unique (or set on_duplicate_key to keep_first/keep_last with order_by).",
                    metadata={
                        "duplicate_keys": problems.duplicate_keys,
                        "duplicate_key_samples": dg.MetadataValue.json(problems.duplicate_samples),
                        **policy,
                    },
                )
            ],
        )

    return _snapshot
