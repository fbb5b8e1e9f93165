"""What segment/<sync> does when it materializes: deliver the diff's events; and the report every delivery makes."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.assets.diff_sending import check_diff_current, send_diff
from segment_sync.assets.diff_step import DiffFiles
from segment_sync.assets.names import ResourceKeys, segment_key, state_errors_as_failures
from segment_sync.delivery.diff_delivery import SyncResult
from segment_sync.metadata import calls_table, counts_table, events_preview, markdown_table
from segment_sync.resources import SegmentResource, WarehouseResource
from segment_sync.segment_api.transport import Outbox, Transport
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder
from segment_sync.storage.run_log import CallLog, RunLog, prune_logs
from segment_sync.storage.state import DryRunState, SyncState

if TYPE_CHECKING:
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState

HISTORY_RUNS = 10
HISTORY_KEYS = ("events_sent", "rows_rejected", "rows_skipped", "rows_undelivered")


def materialize_delivery(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    logs: LogSettings,
    engine: Engine = "polars",
) -> dg.MaterializeResult:
    """Deliver the sync's diff; fail when rows stay undelivered."""
    started = time.monotonic()
    root = keys.state_of(context).root()
    segment = keys.segment_of(context)
    files = SyncFolder.of(root, sync.name)
    log, calls = open_run_logs(files, sync, logs, context.run.run_id)
    if engine == "warehouse":
        from segment_sync.assets.warehouse_delivery_step import deliver_on_warehouse

        result, store, transport = deliver_on_warehouse(context, keys, sync, model, log, calls)
    else:
        with state_errors_as_failures():
            state = SyncState(files.path, sync.name)
            with state.lock():
                result, store, transport = send_local_diff(
                    state, DiffFiles(files.diff, files.diff_info), sync, segment, log, calls, root, context.run.run_id
                )
    if logs.warehouse_table:
        _write_log_to_warehouse(keys.warehouse_of(context), root, logs.warehouse_table, log, context)
    metadata = delivery_metadata(result, log, calls, started, store, segment, transport, sync)
    metadata["recent_runs"] = dg.MetadataValue.md(
        recent_runs(context.instance, sync.name, context.run.run_id, metadata)
    )
    context.log.info(summary_line(sync.name, result, log))
    fail_if_not_delivered(sync, result, log, segment, metadata)
    return dg.MaterializeResult(metadata=metadata)


def open_run_logs(files: SyncFolder, sync: SyncSpec, logs: LogSettings, run_id: str) -> tuple[RunLog, CallLog]:
    """The run's row log and API call log, after pruning those past their retention."""
    prune_logs(files.path, logs.retention_days)
    return RunLog(files.path, sync.name, run_id), CallLog(files.path, run_id)


def send_local_diff(
    state: SyncState,
    diff_files: DiffFiles,
    sync: SyncSpec,
    segment: SegmentResource,
    log: RunLog,
    calls: CallLog,
    root: Path,
    run_id: str,
    *,
    dry_run: bool = False,
) -> tuple[SyncResult, SyncState | DryRunState, Transport]:
    """The Polars engine's delivery of a diff file (the state's lock held): the state advanced for what Segment
    accepted, or, for a dry run, the request bodies written to the dry run's outbox and nothing recorded."""
    info = orjson.loads(diff_files.diff_info.read_bytes()) if diff_files.diff_info.exists() else None
    info = check_diff_current(sync, info, state.meta.generation)
    diff = pl.scan_parquet(diff_files.diff)
    return send_diff(sync, diff, state, info, root, segment, log, calls, run_id, dry_run=dry_run)


def summary_line(sync: str, result: SyncResult, log: RunLog, *, dry_run: bool = False) -> str:
    """One line for the run's log: what the delivery sent, rejected, skipped and left undelivered."""
    by_type = ", ".join(f"{n} {t}" for t, n in sorted(result.sent.items())) or "none"
    verb = "would send" if dry_run else "sent"
    return (
        f"sync {sync}: {verb} {sum(result.sent.values())} events ({by_type}); {log.rejected} rows rejected, "
        f"{result.skipped} skipped, {result.undelivered} undelivered"
    )


def fail_if_not_delivered(
    sync: SyncSpec, result: SyncResult, log: RunLog, segment: SegmentResource, metadata: dict[str, Any]
) -> None:
    """Fail the step when rows stay undelivered, or when Segment rejected every event."""
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


def recent_runs(instance: dg.DagsterInstance, sync: str, run_id: str, current: dict[str, Any]) -> str:
    """The sync's latest deliveries, this one first, as a Markdown table: the history without opening each one."""
    rows = [{"run": run_id[:8], **{k: current[k] for k in HISTORY_KEYS}}]
    records = instance.fetch_materializations(segment_key(sync), limit=HISTORY_RUNS - 1).records
    for record in records:
        materialization = record.asset_materialization
        metadata = materialization.metadata if materialization else {}
        values = {k: metadata[k].value if k in metadata else None for k in HISTORY_KEYS}
        rows.append({"run": record.run_id[:8], **values})
    return markdown_table(pl.DataFrame(rows))


def delivery_metadata(
    result: SyncResult,
    log: RunLog,
    calls: CallLog,
    started: float,
    store: "SyncState | DryRunState | WarehouseState",
    segment: SegmentResource,
    transport: Transport,
    sync: SyncSpec,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """What a delivery (or a dry run) reports: counts, timings, API calls and where the logs are."""
    metadata: dict[str, Any] = {
        "events_sent": sum(result.sent.values()),
        "events_sent_by_type": counts_table(dict(result.sent), "type"),
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
            preview = events_preview(transport.path, values=sync.preview_values)
            metadata["preview"] = dg.MetadataValue.md(preview)
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
