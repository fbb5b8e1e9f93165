"""What a sync's dry-run job does: the sync's steps on scratch copies, the request bodies written, nothing sent."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from segment_sync.assets.delivery_step import delivery_metadata, open_run_logs, send_local_diff, summary_line
from segment_sync.assets.diff_step import DiffFiles, guard_verdict, unguarded_reason, write_diff
from segment_sync.assets.names import ResourceKeys, state_errors_as_failures
from segment_sync.assets.run_config import DiffConfig
from segment_sync.assets.snapshot_step import take_snapshot
from segment_sync.delivery.diff_delivery import SyncResult
from segment_sync.segment_api.transport import Transport
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState, SyncState

if TYPE_CHECKING:
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def dry_run(
    context: dg.OpExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    logs: LogSettings,
    declared: str,
    engine: Engine = "polars",
) -> dict[str, Any]:
    """Read the model, diff it and build the events as the sync would; write the request bodies, send nothing.

    The snapshot and the diff go to scratch files (Polars engine) or the run's own tables (warehouse engine), so
    the sync's own are untouched; no state is recorded and no asset is materialized. Returns the run's metadata,
    the guard's verdict included.
    """
    started = time.monotonic()
    root = keys.state_of(context).root()
    segment = keys.segment_of(context)
    files = SyncFolder.of(root, sync.name)
    run_id = context.run.run_id
    log, calls = open_run_logs(files, sync, logs, run_id)
    if engine == "warehouse":
        problems, unguarded, (result, store, transport) = _on_warehouse(
            context, keys, sync, model, declared, log, calls
        )
    else:
        with state_errors_as_failures(), tempfile.TemporaryDirectory(prefix="dry-run-", dir=root) as work:
            scratch = Path(work)
            snapshot = scratch / "snapshot.parquet"
            take_snapshot(keys.warehouse_of(context), root, model, [sync.compared_columns], snapshot)
            state = SyncState(files.path, sync.name)
            with state.lock():
                diff_files = DiffFiles(scratch / "diff.parquet", scratch / "diff.json")
                diff = write_diff(state, snapshot, diff_files, sync, model, DiffConfig(), declared, dry_run=True)
                problems, unguarded = diff.problems, unguarded_reason(diff.initial, DiffConfig())
                result, store, transport = send_local_diff(
                    state, diff_files, sync, segment, log, calls, root, run_id, dry_run=True
                )
    metadata = delivery_metadata(result, log, calls, started, store, segment, transport, sync, dry_run=True)
    context.log.info(summary_line(sync.name, result, log, dry_run=True))
    return {"manual_run": "dry run", "guard": guard_verdict(problems, unguarded), **metadata}


def _on_warehouse(
    context: dg.OpExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    declared: str,
    log: RunLog,
    calls: CallLog,
) -> tuple[list[str], str | None, tuple[SyncResult, WarehouseState | DryRunState, Transport]]:
    """The warehouse engine's dry run: the model copied, diffed and read out through the run's own scratch tables
    (dropped after it), so the sync's snapshot and diff tables and its state stay as they were."""
    from segment_sync.assets.warehouse_connection import warehouse_connection
    from segment_sync.assets.warehouse_delivery_step import send_warehouse_changes
    from segment_sync.assets.warehouse_diff_step import find_warehouse_diff
    from segment_sync.warehouse_engine import sql_diff
    from segment_sync.warehouse_engine.dry_run_tables import drop_scratch, dry_run_lease

    run_id = context.run.run_id
    # the run's tables exist only while its lease is held, so a run that finds the lease expired may drop them
    with (
        warehouse_connection(context, keys, f"sync {sync.name!r}") as warehouse,  # type: ignore[arg-type]
        warehouse.leased(dry_run_lease(warehouse.tables.scratch_copy(run_id), sync), f"dry run {run_id}", run_id),
    ):
        scratch = dataclasses.replace(warehouse, tables=warehouse.tables.scratch_copy(run_id))
        try:
            counts = sql_diff.take_snapshot(scratch.url, scratch.engine, scratch.tables, model)
            if counts.duplicate_keys:
                raise dg.Failure(
                    f"sync {sync.name!r}: model {model.name!r} has {counts.duplicate_keys} primary keys held by more "
                    "than one row, so its sync would send nothing; keep one row per key in the model's query"
                )
            store = scratch.state(sync.name, run_id)
            with store.lock():
                found = find_warehouse_diff(
                    scratch, store, DiffConfig(), sync, model, declared, context.log, dry_run=True
                )
                root, segment = keys.state_of(context).root(), keys.segment_of(context)  # type: ignore[arg-type]
                sent = send_warehouse_changes(
                    scratch, store, found.info, sync, model, root, segment, log, calls, run_id, dry_run=True
                )
        finally:
            drop_scratch(scratch.engine, scratch.tables, model, sync)
    return found.problems, unguarded_reason(found.initial, DiffConfig()), sent
