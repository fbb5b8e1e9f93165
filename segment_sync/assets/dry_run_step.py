"""What a sync's dry-run job does: the sync's steps on scratch copies, the request bodies written, nothing sent."""

import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg

from segment_sync.assets.delivery_step import delivery_metadata, open_run_logs, send_local_diff, summary_line
from segment_sync.assets.diff_step import DiffFiles, write_diff
from segment_sync.assets.names import ResourceKeys, state_errors_as_failures
from segment_sync.assets.run_config import DeliveryConfig, DiffConfig
from segment_sync.assets.snapshot_step import take_snapshot
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import SyncState


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

    On the Polars engine the snapshot and the diff go to scratch files, so the sync's own are untouched; the
    warehouse engine refreshes its snapshot and diff tables as a run of the sync would. Either way no state is
    recorded and no asset is materialized. Returns the run's metadata, the guard's verdict included.
    """
    started = time.monotonic()
    root = keys.state_of(context).root()
    segment = keys.segment_of(context)
    files = SyncFolder.of(root, sync.name)
    run_id = context.run.run_id
    log, calls = open_run_logs(files, sync, logs, run_id)
    if engine == "warehouse":
        problems, (result, store, transport) = _on_warehouse(context, keys, sync, model, declared, log, calls)
    else:
        with state_errors_as_failures(), tempfile.TemporaryDirectory(prefix="dry-run-", dir=root) as work:
            scratch = Path(work)
            snapshot = scratch / "snapshot.parquet"
            take_snapshot(keys.warehouse_of(context), root, model, [sync.compared_columns], snapshot)
            state = SyncState(files.path, sync.name)
            with state.lock():
                diff_files = DiffFiles(scratch / "diff.parquet", scratch / "diff.json")
                diff = write_diff(state, snapshot, diff_files, sync, model, DiffConfig(), declared, dry_run=True)
                problems = diff.problems
                result, store, transport = send_local_diff(
                    state, diff_files, sync, segment, log, calls, root, run_id, dry_run=True
                )
    metadata = delivery_metadata(result, log, calls, started, store, segment, transport, sync, dry_run=True)
    context.log.info(summary_line(sync.name, result, log, dry_run=True))
    verdict = "; ".join(problems) if problems else "within limits"
    return {"manual_run": "dry run", "guard": verdict, **metadata}


def _on_warehouse(
    context: dg.OpExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    declared: str,
    log: RunLog,
    calls: CallLog,
) -> tuple[list[str], Any]:
    """The warehouse engine's dry run: its snapshot and diff steps, then its delivery into the dry run's outbox."""
    from segment_sync.assets.warehouse_delivery_step import deliver_on_warehouse
    from segment_sync.assets.warehouse_diff_step import materialize_warehouse_diff
    from segment_sync.assets.warehouse_snapshot_step import materialize_warehouse_snapshot

    # The steps only use the context's run, log and resources, which an op's context has as well.
    materialize_warehouse_snapshot(context, keys, model)  # type: ignore[arg-type]
    diff = materialize_warehouse_diff(context, keys, DiffConfig(), sync, model, declared)  # type: ignore[arg-type]
    guard = next(iter(diff.check_results or []), None)
    problems = list(guard.metadata["problems"].value) if guard and not guard.passed else []  # type: ignore[union-attr]
    delivered = deliver_on_warehouse(context, keys, DeliveryConfig(dry_run=True), sync, model, log, calls)  # type: ignore[arg-type]
    return problems, delivered
