"""What a sync's test-row and replay jobs do: events sent outside the diff, logged, never recorded in the state."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import polars as pl

from segment_sync.assets.names import (
    state_errors_as_failures,
)
from segment_sync.events.manual_events import ControlError, replay_payloads, test_row_event
from segment_sync.events.row_builder import RowRejected
from segment_sync.metadata import calls_table, event_outline
from segment_sync.resources import SegmentResource
from segment_sync.segment_api.client import deliver
from segment_sync.snapshot.snapshot_file import scan_snapshot
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder, outbox_path, snapshot_path
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import SyncState
from segment_sync.values.encoding import key_strings

RowFinder = Callable[[str], tuple[str, pl.DataFrame]]  # a key (empty: the first) to that key and its row


def send_outside_the_diff(
    sync: SyncSpec,
    model: ModelSpec,
    root: Path,
    segment: SegmentResource,
    log: RunLog,
    calls: CallLog,
    run_id: str,
    *,
    test_row: str | None,
    replay_keys: list[str],
    replay_run: str | None,
    snapshot_row: RowFinder | None = None,
    lock: AbstractContextManager | None = None,
) -> dict[str, Any]:
    """A test row (`test_row` empty: the first row of the latest snapshot) or a replay: sent now, logged, never
    recorded in the state; returns the run's metadata.

    The row comes from `snapshot_row` (default: the local snapshot file), and the send holds `lock` (default: the
    local state's lock), so that it never interleaves with a delivery of the sync.
    """
    files = SyncFolder.of(root, sync.name)
    try:
        if test_row is not None:
            test_row, snapshot = (snapshot_row or _local_snapshot_row(root, model))(test_row)
            payloads, missing = [test_row_event(sync, model, snapshot, test_row, run_id).payload], []
        else:
            payloads, missing = replay_payloads(files.path, run_id, from_run=replay_run, keys=replay_keys)
    except (ControlError, RowRejected, FileNotFoundError) as exc:
        raise dg.Failure(f"sync {sync.name!r}: {exc}; nothing was sent") from None
    with state_errors_as_failures(), lock or SyncState(files.path, sync.name).lock():
        try:
            report = deliver(
                payloads,
                segment.transport(outbox_path(root, sync.name)),
                lambda _: None,
                policy=segment.retry_policy(),
                pacer=segment.pacer(),
                on_call=calls,
            )
        finally:
            calls.close()
    failed = dict(report.rejected) | dict.fromkeys(report.undelivered, report.undelivered_reason)
    status = "test_row" if test_row is not None else "replayed"
    for i, payload in enumerate(payloads):
        event = orjson.loads(payload)
        name, message_id = event.get("event") or event["type"], event["messageId"]
        log.add(
            None,
            "added",
            "rejected" if i in failed else status,
            event=name,
            message_id=message_id,
            reason=failed.get(i),
        )
    log.close()
    metadata: dict[str, Any] = {
        "manual_run": "test row" if test_row is not None else "replay",
        "events_sent": report.acknowledged,
        "events_failed": len(failed),
        "api_calls": dg.MetadataValue.md(calls_table(calls.summaries)),
        "segment_response": dg.MetadataValue.json(calls.summaries[-1] if calls.summaries else {}),
        "sync_log": dg.MetadataValue.path(str(log.path)),
    }
    if test_row is not None:
        metadata["key"] = test_row
        metadata["event"] = dg.MetadataValue.json(event_outline(orjson.loads(payloads[0]), values=sync.preview_values))
    else:
        metadata["message_ids_not_found"] = dg.MetadataValue.json(missing[:20])
    if failed:
        raise dg.Failure(
            f"sync {sync.name!r}: {len(failed)} events were not accepted: {next(iter(failed.values()))}",
            metadata=metadata,
        )
    return metadata


def _local_snapshot_row(root: Path, model: ModelSpec) -> RowFinder:
    """The row of the local snapshot file with a key (empty: the first key)."""

    def find(key: str) -> tuple[str, pl.DataFrame]:
        scan = scan_snapshot(snapshot_path(root, model.name))
        if not key:
            first = scan.select(key_strings(scan, model.key_columns)).drop_nulls().sort(pl.all()).head(1).collect()
            if first.is_empty():
                raise ControlError(f"model {model.name!r} has no row with a primary key in its latest snapshot")
            key = first.item()
        return key, scan.filter(key_strings(scan, model.key_columns) == key).collect()

    return find
