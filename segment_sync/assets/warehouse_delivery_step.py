"""What segment/<sync> does on the warehouse engine: the diff table's rows read out and sent, state in the warehouse."""

import contextlib
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from segment_sync.assets.diff_sending import send_diff
from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.run_config import DeliveryConfig
from segment_sync.assets.warehouse_connection import warehouse_connection
from segment_sync.delivery.diff_delivery import SyncResult
from segment_sync.segment_api.transport import Outbox, Transport
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder, outbox_path
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState
from segment_sync.warehouse_engine import sql_diff
from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def deliver_on_warehouse(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    config: DeliveryConfig,
    sync: SyncSpec,
    model: ModelSpec,
    log: RunLog,
    calls: CallLog,
) -> tuple[SyncResult, WarehouseState | DryRunState, Transport]:
    """Send the rows of `<state_schema>.diff__<sync>`; the warehouse state advances for what Segment accepted."""
    root = keys.state_of(context).root()
    segment = keys.segment_of(context)
    run_id = context.run.run_id
    with warehouse_connection(context, keys, f"sync {sync.name!r}") as warehouse, contextlib.ExitStack() as stack:
        store: WarehouseState | DryRunState = warehouse.state(sync.name, run_id)
        with store.lock():
            info = store.diff_info()
            if info is None or info["generation"] != store.meta.generation:
                raise dg.Failure(
                    f"sync {sync.name!r}: the diff is missing or older than the sync's state; run the whole "
                    f"sync job (diff/{sync.name} then segment/{sync.name}), nothing was sent"
                )
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="segment-sync-changes-"))
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
            if config.dry_run:
                store = store.dry_run_copy()
                transport: Transport = Outbox(SyncFolder.of(root, sync.name).dry_run_outbox(run_id))
            else:
                store.begin_run()
                transport = segment.transport(outbox_path(root, sync.name))
            result = send_diff(sync, changes, store, transport, log, calls, info, segment, dry_run=config.dry_run)
    return result, store, transport
