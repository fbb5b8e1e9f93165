"""What snapshot/<model> does on the warehouse engine: copy the model into a table in the warehouse, check its keys."""

import time

import dagster as dg
import polars as pl

from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.assets.warehouse_connection import warehouse_connection
from segment_sync.metadata import schema_metadata
from segment_sync.spec import ModelSpec
from segment_sync.warehouse_engine import sql_diff


def materialize_warehouse_snapshot(
    context: dg.AssetExecutionContext, keys: ResourceKeys, model: ModelSpec
) -> dg.MaterializeResult:
    """Copy the model into `<state_schema>.snapshot__<model>`; the result carries the primary key check."""
    started = time.perf_counter()
    with (
        warehouse_connection(context, keys, f"model {model.name!r}") as warehouse,
        warehouse.leased(f"snapshot:{model.name}", f"the snapshot of model {model.name!r}", context.run.run_id),
    ):  # two runs copying one model at once would replace each other's tables
        counts = sql_diff.take_snapshot(warehouse.url, warehouse.engine, warehouse.tables, model)
        schema = sql_diff.snapshot_schema(warehouse.url, warehouse.engine, warehouse.tables, model)
    seconds = time.perf_counter() - started
    table = f"{warehouse.tables.schema}.{warehouse.tables.snapshot_name(model.name)}"
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": counts.rows,
            "dagster/table_name": table,
            **schema_metadata(pl.DataFrame(schema=schema)),
            "engine": "warehouse",
            "duplicate_rows_dropped": counts.dropped_rows,
            "duplicate_rows_dropped_keys": dg.MetadataValue.json(list(counts.dropped_keys)),
            "null_key_rows": counts.null_key_rows,
            "key_type": counts.key_type,
            "seconds": round(seconds, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PK_CHECK,
                passed=counts.duplicate_keys == 0,
                severity=dg.AssetCheckSeverity.ERROR,
                description=None
                if counts.duplicate_keys == 0
                else f"{counts.duplicate_keys} primary keys appear more than once in {table}: nothing is sent until "
                "the model's key is unique.",
                metadata={"duplicate_keys": counts.duplicate_keys},
            )
        ],
    )
