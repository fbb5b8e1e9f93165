"""What snapshot/<model> does when it materializes: read the model, write the snapshot, check its keys."""

import datetime as dt
import time

import dagster as dg
import orjson

from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.metadata import markdown_table, schema_metadata
from segment_sync.snapshot.snapshot_file import SnapshotError, scan_snapshot, write_snapshot
from segment_sync.spec import ModelSpec
from segment_sync.storage import durable_file
from segment_sync.storage.layout import file_identity, snapshot_checks_path, snapshot_path
from segment_sync.warehouse.model_reader import read_model_batches
from segment_sync.warehouse.warehouse_error import WarehouseError


def materialize_snapshot(
    context: dg.AssetExecutionContext, keys: ResourceKeys, model: ModelSpec, hashed_columns: list[list[str]]
) -> dg.MaterializeResult:
    """Read the model into its Parquet snapshot (with row hashes for each set of `hashed_columns`); the result
    carries the primary key check."""
    root = keys.state_of(context).root()
    warehouse = keys.warehouse_of(context)
    path = snapshot_path(root, model.name)
    taken_at = dt.datetime.now(dt.UTC).isoformat()
    started = time.perf_counter()
    try:
        with read_model_batches(warehouse.url(root), model, read_path=warehouse.read_path) as batches:
            summary = write_snapshot(batches, path, model, hashed_columns, one_schema=batches.one_schema)
    except (WarehouseError, SnapshotError) as exc:
        raise dg.Failure(str(exc)) from None
    seconds = time.perf_counter() - started
    problems = summary.problems
    checks = {"file": file_identity(path), "duplicate_keys": problems.duplicate_keys, "taken_at": taken_at}
    durable_file.write_bytes(snapshot_checks_path(path), orjson.dumps(checks))
    preview = scan_snapshot(path).head(10).collect()
    policy = {
        "duplicate_rows_dropped": summary.dropped_rows,
        "duplicate_rows_dropped_keys": dg.MetadataValue.json(summary.dropped_samples),
        "null_key_rows": problems.null_rows,
    }
    non_finite = dict(batches.non_finite)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.rows,
            **schema_metadata(preview),
            **policy,
            "read_path": batches.path + (f" ({batches.fallback})" if batches.fallback else ""),
            "non_finite_values": dg.MetadataValue.json(non_finite),  # NaN and ±Infinity per column, sent as null
            "rows_per_second": round(summary.rows / seconds) if seconds else 0,
            "preview": dg.MetadataValue.md(markdown_table(preview)),
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
