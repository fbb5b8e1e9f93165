"""What snapshot/<model> does when it materializes: read the model, write the snapshot, check its keys."""

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.run_config import PK_CHECK
from segment_sync.metadata import preview_table, schema_metadata
from segment_sync.resources import WarehouseResource
from segment_sync.snapshot.row_hash import STORED_HASH_PREFIX
from segment_sync.snapshot.snapshot_file import SnapshotError, SnapshotSummary, scan_snapshot, write_snapshot
from segment_sync.spec import ModelSpec
from segment_sync.storage import durable_file
from segment_sync.storage.layout import file_identity, snapshot_checks_path, snapshot_path
from segment_sync.warehouse.model_reader import read_model_batches
from segment_sync.warehouse.warehouse_error import WarehouseError


@dataclass(frozen=True)
class TakenSnapshot:
    """A model read into a snapshot file: what was written, how it was read and how fast."""

    summary: SnapshotSummary
    read_path: str
    seconds: float
    non_finite: dict[str, int] = field(default_factory=dict)


def take_snapshot(
    warehouse: WarehouseResource, root: Path, model: ModelSpec, hashed_columns: list[list[str]], path: Path
) -> TakenSnapshot:
    """Read the model into the snapshot file at `path` and note its key checks beside it."""
    taken_at = dt.datetime.now(dt.UTC).isoformat()
    started = time.perf_counter()
    try:
        with read_model_batches(warehouse.url(root), model, read_path=warehouse.read_path) as batches:
            summary = write_snapshot(batches, path, model, hashed_columns, one_schema=batches.one_schema)
    except (WarehouseError, SnapshotError) as exc:
        raise dg.Failure(str(exc)) from None
    checks = {"file": file_identity(path), "duplicate_keys": summary.problems.duplicate_keys, "taken_at": taken_at}
    durable_file.write_bytes(snapshot_checks_path(path), orjson.dumps(checks))
    read_path = batches.path + (f" ({batches.fallback})" if batches.fallback else "")
    return TakenSnapshot(summary, read_path, time.perf_counter() - started, dict(batches.non_finite))


def content_version(path: Path) -> str:
    """A version of the snapshot's content that ignores row order: the same rows give the same version.

    It is the row count and the wrapping sum of each stored column of row hashes, so it costs one streaming pass
    over those columns only.
    """
    scan = pl.scan_parquet(path)
    hashes = sorted(c for c in scan.collect_schema().names() if c.startswith(STORED_HASH_PREFIX))
    sums = scan.select(pl.len().cast(pl.UInt64).alias("rows"), *(pl.col(c).sum() for c in hashes)).collect()
    return "-".join(f"{v:x}" for v in sums.row(0))


def materialize_snapshot(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    model: ModelSpec,
    hashed_columns: list[list[str]],
    preview_values: bool = False,
) -> dg.MaterializeResult:
    """Read the model into its Parquet snapshot (with row hashes for each set of `hashed_columns`); the result
    carries the primary key check. The preview shows row values only with `preview_values`, else the keys."""
    root = keys.state_of(context).root()
    path = snapshot_path(root, model.name)
    taken = take_snapshot(keys.warehouse_of(context), root, model, hashed_columns, path)
    summary, problems = taken.summary, taken.summary.problems
    preview = scan_snapshot(path).head(10).collect()
    policy = {
        "duplicate_rows_dropped": summary.dropped_rows,
        "duplicate_rows_dropped_keys": dg.MetadataValue.json(summary.dropped_samples),
        "null_key_rows": problems.null_rows,
    }
    metadata: dict[str, Any] = {
        "dagster/row_count": summary.rows,
        **schema_metadata(preview),
        **policy,
        "read_path": taken.read_path,
        "non_finite_values": dg.MetadataValue.json(taken.non_finite),  # NaN and ±Infinity per column, sent as null
        "rows_per_second": round(summary.rows / taken.seconds) if taken.seconds else 0,
        "preview": dg.MetadataValue.md(preview_table(preview, model.key_columns, values=preview_values)),
        "path": dg.MetadataValue.path(str(path)),
    }
    return dg.MaterializeResult(
        metadata=metadata,
        # the same rows read again keep the version, so the diffs of the model's other syncs do not turn Unsynced
        data_version=dg.DataVersion(content_version(path)),
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
