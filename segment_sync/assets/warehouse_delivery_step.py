"""What segment/<sync> does on the warehouse engine: the diff table's rows read out and sent, state in the warehouse."""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from segment_sync.assets.diff_sending import check_diff_current, send_diff
from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.warehouse_connection import WarehouseConnection, warehouse_connection
from segment_sync.delivery.diff_delivery import SyncResult
from segment_sync.resources import SegmentResource
from segment_sync.segment_api.transport import Transport
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState
from segment_sync.warehouse_engine import sql_diff
from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def deliver_on_warehouse(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    log: RunLog,
    calls: CallLog,
) -> tuple[SyncResult, WarehouseState | DryRunState, Transport]:
    """Send the rows of `<state_schema>.diff__<sync>`; the warehouse state advances for what Segment accepted."""
    with warehouse_connection(context, keys, f"sync {sync.name!r}") as warehouse:
        store = warehouse.state(sync.name, context.run.run_id)
        with store.lock():
            info = check_diff_current(sync, store.diff_info(), store.meta.generation)
            root = keys.state_of(context).root()
            return send_warehouse_changes(
                warehouse, store, info, sync, model, root, keys.segment_of(context), log, calls, context.run.run_id
            )


def send_warehouse_changes(
    warehouse: WarehouseConnection,
    store: WarehouseState,
    info: dict,
    sync: SyncSpec,
    model: ModelSpec,
    root: Path,
    segment: SegmentResource,
    log: RunLog,
    calls: CallLog,
    run_id: str,
    *,
    dry_run: bool = False,
) -> tuple[SyncResult, WarehouseState | DryRunState, Transport]:
    """Read the diff table's changed rows out and send them (the sync's lease held); a `dry_run` writes the request
    bodies to its outbox and notes nothing."""
    with tempfile.TemporaryDirectory(prefix="segment-sync-changes-") as folder:
        path = Path(folder) / "changes.parquet"
        resync = info["generation"] if info.get("full_resync") else None
        sql_diff.write_changes(
            warehouse.url,
            warehouse.engine,
            warehouse.tables,
            sync,
            model,
            path,
            resync_generation=resync,
            keep_unchanged=False,  # a file of events' rows only, read by slices without a filter
        )
        changes = pl.scan_parquet(path)
        return send_diff(sync, changes, store, info, root, segment, log, calls, run_id, dry_run=dry_run)
