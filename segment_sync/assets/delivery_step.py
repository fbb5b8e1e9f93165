"""What segment/<sync> does when it materializes: deliver the diff's events, or a dry run, test row or replay."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.assets.diff_sending import send_diff
from segment_sync.assets.manual_send import send_outside_the_diff
from segment_sync.assets.names import ResourceKeys, state_errors_as_failures
from segment_sync.assets.run_config import DeliveryConfig
from segment_sync.delivery.diff_delivery import SyncResult
from segment_sync.metadata import calls_table, events_preview
from segment_sync.resources import SegmentResource, WarehouseResource
from segment_sync.segment_api.transport import Outbox, Transport
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder, outbox_path
from segment_sync.storage.run_log import CallLog, RunLog, prune_logs
from segment_sync.storage.state import DryRunState, SyncState

if TYPE_CHECKING:
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def materialize_delivery(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    config: DeliveryConfig,
    sync: SyncSpec,
    model: ModelSpec,
    logs: LogSettings,
    engine: Engine = "polars",
) -> dg.MaterializeResult:
    """Deliver the sync's diff (or a dry run, test row or replay); fail when rows stay undelivered."""
    started = time.monotonic()
    root = keys.state_of(context).root()
    segment = keys.segment_of(context)
    files = SyncFolder.of(root, sync.name)
    prune_logs(files.path, logs.retention_days)
    run_id = context.run.run_id
    log, calls = RunLog(files.path, sync.name, run_id), CallLog(files.path, run_id)
    if config.test_row is not None or config.replay_keys or config.replay_run:
        if engine == "warehouse":
            raise dg.Failure(
                f"sync {sync.name!r}: test_row and replays are not available on the warehouse engine yet; nothing "
                "was sent. A dry run (dry_run: true) shows the exact request bodies."
            )
        return send_outside_the_diff(
            sync,
            model,
            root,
            segment,
            log,
            calls,
            run_id,
            test_row=config.test_row,
            replay_keys=config.replay_keys,
            replay_run=config.replay_run,
        )
    if engine == "warehouse":
        from segment_sync.assets.warehouse_delivery_step import deliver_on_warehouse

        result, store, transport = deliver_on_warehouse(context, keys, config, sync, model, log, calls)
    else:
        result, store, transport = _deliver_on_local_state(root, config, sync, segment, files, log, calls, run_id)
    if logs.warehouse_table and not config.dry_run:
        _write_log_to_warehouse(keys.warehouse_of(context), root, logs.warehouse_table, log, context)
    metadata = _delivery_metadata(result, log, calls, started, store, segment, config.dry_run, transport)
    if result.undelivered:
        raise dg.Failure(
            f"sync {sync.name!r}: {result.undelivered} rows were not delivered ({result.undelivered_reason}); "
            f"{sum(result.sent.values())} events were. The next run sends the rest with the same messageIds.",
            metadata=metadata,
        )
    if result.all_rejected:
        raise dg.Failure(
            f"sync {sync.name!r}: Segment rejected every event this run sent ({result.rejected_by_segment}; "
            f"{result.rejected_reason}), so nothing was delivered. The rows are recorded as rejected in "
            f"{log.rejected_path} and the next run sends them again; check the write key ({segment.write_key_env}) "
            "and the endpoint.",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _deliver_on_local_state(
    root: Path,
    config: DeliveryConfig,
    sync: SyncSpec,
    segment: SegmentResource,
    files: SyncFolder,
    log: RunLog,
    calls: CallLog,
    run_id: str,
) -> tuple[SyncResult, SyncState | DryRunState, Transport]:
    """The Polars engine's delivery: the diff file sent, the state folder advanced for what Segment accepted."""
    with state_errors_as_failures():
        store = SyncState(files.path, sync.name)
        with store.lock():
            info = orjson.loads(files.diff_info.read_bytes()) if files.diff_info.exists() else None
            if info is None or info["generation"] != store.meta.generation:
                raise dg.Failure(
                    f"sync {sync.name!r}: the diff is missing or older than the sync's state; run the whole "
                    f"sync job (diff/{sync.name} then segment/{sync.name}), nothing was sent"
                )
            if config.dry_run:
                store = store.dry_run_copy()
                transport = Outbox(files.dry_run_outbox(run_id))
            else:
                store.begin_run()
                transport = segment.transport(outbox_path(root, sync.name))
            diff = pl.scan_parquet(files.diff)
            result = send_diff(sync, diff, store, transport, log, calls, info, segment, dry_run=config.dry_run)
    return result, store, transport


def _delivery_metadata(
    result: SyncResult,
    log: RunLog,
    calls: CallLog,
    started: float,
    store: "SyncState | DryRunState | WarehouseState",
    segment: SegmentResource,
    dry_run: bool,
    transport: Transport,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "events_sent": sum(result.sent.values()),
        "events_sent_by_type": dg.MetadataValue.json(dict(sorted(result.sent.items()))),
        "rows_skipped": result.skipped,
        "rows_rejected": log.rejected,
        "rejected_sample": dg.MetadataValue.json(log.rejected_sample),
        "rows_undelivered": result.undelivered,
        "batches": result.batches,
        "requests": result.requests,
        "retries": result.retries,
        "bytes_sent": result.bytes_sent,
        "duration_seconds": round(time.monotonic() - started, 3),
        "state_seconds": round(store.seconds, 3),  # of which waiting for the state: notes queued or written, the fold
        "journal_write_seconds": round(store.journal_seconds, 3),  # the journal's thread, while sending went on
        "destination": "dry run (outbox)" if dry_run else segment.resolved_destination(),
        "api_calls": dg.MetadataValue.md(calls_table(calls.summaries)),
        "sync_log": dg.MetadataValue.path(str(log.path)),
    }
    if calls.summaries:
        metadata["api_calls_file"] = dg.MetadataValue.path(str(calls.path))
    if log.rejected:
        metadata["rejected_rows_file"] = dg.MetadataValue.path(str(log.rejected_path))
    if dry_run and isinstance(transport, Outbox):
        if transport.path.exists():
            metadata["dry_run_request_bodies"] = dg.MetadataValue.path(str(transport.path))
            metadata["preview"] = dg.MetadataValue.md(events_preview(transport.path))
        else:
            counts = f"{result.skipped} rows skipped, {log.rejected} rejected"
            metadata["preview"] = dg.MetadataValue.md(f"Nothing to send ({counts}): no request body was written.")
    return metadata


def _write_log_to_warehouse(
    warehouse: WarehouseResource, root: Path, table: str, log: RunLog, context: dg.AssetExecutionContext
) -> None:
    from segment_sync.warehouse.log_table import append_to_table
    from segment_sync.warehouse.warehouse_error import WarehouseError

    try:
        append_to_table(warehouse.url(root), table, pl.read_parquet(log.path))
    except WarehouseError as exc:
        context.log.warning(f"The sync log stays in {log.path}: {exc}")
