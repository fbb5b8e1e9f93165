"""One delivery of a sync's diff: events built and sent in chunks, state advanced only for what was accepted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from segment_sync.delivery import RetryPolicy, Transport, deliver
from segment_sync.diff import DIFF_SCHEMA, KEY, KIND
from segment_sync.events import DiffRow, Event, build_outcomes
from segment_sync.pacing import Pacer
from segment_sync.spec import SyncSpec
from segment_sync.state import DryRunState, SyncState
from segment_sync.sync_log import CallLog, RunLog

CHUNK_ROWS = 50_000


@dataclass
class SyncResult:
    """What one delivery did."""

    sent: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    undelivered_by_kind: Counter[str] = field(default_factory=Counter)
    undelivered_reason: str | None = None
    batches: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0

    @property
    def undelivered(self) -> int:
        """Rows of the diff neither acknowledged nor rejected, because sending stopped."""
        return sum(self.undelivered_by_kind.values())


def deliver_diff(
    sync: SyncSpec,
    diff: pl.DataFrame,
    store: SyncState | DryRunState,
    transport: Transport,
    log: RunLog,
    *,
    initial: bool,
    policy: RetryPolicy | None = None,
    max_batch_bytes: int | None = None,
    pacer: Pacer | None = None,
    calls: CallLog | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> SyncResult:
    """Build and send the events of a diff chunk by chunk; record each acknowledged or skipped row in the state.

    Every row's outcome goes to `log`, every API call to `calls`. The caller holds the state's lock and has
    started the run (`store.begin_run()`); it commits after.
    """
    result = SyncResult()
    diff = diff.cast(DIFF_SCHEMA)  # type: ignore[arg-type]
    skip_reason = "initial run, and send_initial is off" if initial and not sync.sends_initial else None
    for offset in range(0, diff.height, chunk_rows):
        rows = [DiffRow(*r) for r in diff.slice(offset, chunk_rows).iter_rows()]
        outcomes = list(build_outcomes(sync, rows, store.meta.sync_uuid, initial=initial))
        store.record((o.row.key, o.row.after) for o in outcomes if o.skipped)
        for o in outcomes:
            if o.skipped:
                reason = skip_reason or f"sync {sync.name!r} sends nothing for a {o.row.kind} row"
                log.add(o.row.key, o.row.kind, "skipped", reason=reason)
            elif o.rejected is not None:
                log.add(o.row.key, o.row.kind, "rejected", reason=o.rejected)
        result.skipped += sum(o.skipped for o in outcomes)
        events = [o.event for o in outcomes if o.event is not None]
        report = deliver(
            [e.payload for e in events],
            transport,
            _recorder(store, events),
            policy=policy,
            max_batch_bytes=max_batch_bytes,
            pacer=pacer,
            on_call=calls,
        )
        failed = dict(report.rejected) | dict.fromkeys(report.undelivered, None)
        for i, event in enumerate(events):
            name = event.name or event.type
            if i not in failed:
                result.sent[name] += 1
                log.add(event.row.key, event.row.kind, "delivered", event=name, message_id=event.message_id)
            else:
                status = "rejected" if failed[i] is not None else "undelivered"
                reason = failed[i] or report.undelivered_reason
                log.add(event.row.key, event.row.kind, status, event=name, message_id=event.message_id, reason=reason)
        result.batches += report.batches
        result.requests += report.requests
        result.retries += report.retries
        result.bytes_sent += report.bytes_sent
        if report.undelivered:
            result.undelivered_by_kind.update(events[i].row.kind for i in report.undelivered)
            for key, kind in diff.slice(offset + chunk_rows).select(KEY, KIND).iter_rows():
                result.undelivered_by_kind[kind] += 1
                log.add(key, kind, "undelivered", reason="not attempted: sending stopped earlier in the run")
            result.undelivered_reason = report.undelivered_reason
            break
    return result


def _recorder(store: SyncState | DryRunState, events: list[Event]) -> Callable[[Sequence[int]], None]:
    def record(acknowledged: Sequence[int]) -> None:
        store.record((events[i].row.key, events[i].row.after) for i in acknowledged)

    return record
