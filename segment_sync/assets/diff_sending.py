"""A diff's events sent and the sync's state committed: what the delivery step does on either engine."""

from typing import TYPE_CHECKING, Any

import polars as pl

from segment_sync.delivery.diff_delivery import SyncResult, deliver_diff
from segment_sync.resources import SegmentResource
from segment_sync.segment_api.transport import Transport
from segment_sync.spec import SyncSpec
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState, SyncState

if TYPE_CHECKING:
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState


def send_diff(
    sync: SyncSpec,
    diff: pl.DataFrame | pl.LazyFrame,
    store: "SyncState | DryRunState | WarehouseState",
    transport: Transport,
    log: RunLog,
    calls: CallLog,
    info: dict[str, Any],
    segment: SegmentResource,
    *,
    dry_run: bool,
) -> SyncResult:
    """Send a diff's events (rows with a null key logged as rejected) and commit the state unless a dry run."""
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
    return result
