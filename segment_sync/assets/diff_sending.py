"""A diff's events sent and the sync's state committed: what the delivery step does on either engine."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from segment_sync.delivery.diff_delivery import SyncResult, deliver_diff
from segment_sync.resources import SegmentResource
from segment_sync.segment_api.transport import Outbox, Transport
from segment_sync.spec import SyncSpec
from segment_sync.storage.layout import SyncFolder, outbox_path
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState, SyncState

if TYPE_CHECKING:
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def check_diff_current(sync: SyncSpec, info: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """What the diff step found, refused when missing or made before the state's latest delivery."""
    if info is None or info["generation"] != generation:
        raise dg.Failure(
            f"sync {sync.name!r}: the diff is missing or older than the sync's state; run the whole "
            f"sync job (diff/{sync.name} then segment/{sync.name}), nothing was sent"
        )
    return info


def send_diff(
    sync: SyncSpec,
    diff: pl.DataFrame | pl.LazyFrame,
    state: "SyncState | WarehouseState",
    info: dict[str, Any],
    root: Path,
    segment: SegmentResource,
    log: RunLog,
    calls: CallLog,
    run_id: str,
    *,
    dry_run: bool,
) -> tuple[SyncResult, "SyncState | DryRunState | WarehouseState", Transport]:
    """Send a diff's events (rows with a null key logged as rejected) and commit the state; a `dry_run` writes the
    request bodies to its outbox and records nothing. Returns the result, the state as sent with and the transport."""
    store: SyncState | DryRunState | WarehouseState
    transport: Transport
    if dry_run:
        store, transport = state.dry_run_copy(), Outbox(SyncFolder.of(root, sync.name).dry_run_outbox(run_id))
    else:
        state.begin_run()
        store, transport = state, segment.transport(outbox_path(root, sync.name))
    try:
        for content in info["null_key_rows"]:
            reason = f"the primary key of model {sync.model!r} is null, so the row cannot be tracked"
            if sync.preview_values:  # the row's values in full, in the files and the metadata's sample
                log.add(None, "added", "rejected", reason=f"{reason}: {content}")
            else:  # in the files only
                log.add(None, "added", "rejected", reason=reason, row_values=content[:200])
        result = deliver_diff(
            sync,
            diff,
            store,
            transport,
            log,
            initial=info["initial"],
            policy=segment.retry_policy(),
            max_batch_bytes=segment.max_batch_bytes,
            pacer=segment.pacer(),
            calls=calls,
            removed_at=info.get("snapshot_taken_at"),
        )
    finally:
        log.close()
        calls.close()
    if not dry_run:
        pending = log.rejected_by_kind + result.undelivered_by_kind
        store.commit(column_kinds=info["column_kinds"], pending=dict(pending), baseline=not info["reset"])
    return result, store, transport
