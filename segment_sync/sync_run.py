"""One delivery of a sync's diff: events built and sent in chunks, state advanced only for what was accepted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from segment_sync.delivery import RetryPolicy, Transport, deliver
from segment_sync.diff import DIFF_SCHEMA, KIND
from segment_sync.events import DiffRow, Event, build_outcomes
from segment_sync.pacing import Pacer
from segment_sync.spec import SyncSpec
from segment_sync.state import SyncState

CHUNK_ROWS = 50_000
SAMPLE_SIZE = 20


class RejectedLog:
    """Rejected rows with reasons: all of them in a JSON-lines file, the first few kept for metadata."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.by_kind: Counter[str] = Counter()  # rows of the diff (with a key) rejected, per change kind
        self.sample: list[dict[str, str | None]] = []
        self._file = None

    def add(self, key: str | None, kind: str, reason: str) -> None:
        """Record one rejected row (a null key for a row whose primary key is missing)."""
        entry = {"key": key, "kind": kind, "reason": reason}
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close(), across many chunks
        self._file.write(orjson.dumps(entry) + b"\n")
        self.count += 1
        if key is not None:
            self.by_kind[kind] += 1
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(entry)

    def close(self) -> None:
        """Flush the file, if any row was rejected."""
        if self._file is not None:
            self._file.close()


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
    store: SyncState,
    transport: Transport,
    rejected: RejectedLog,
    *,
    initial: bool,
    policy: RetryPolicy | None = None,
    max_batch_bytes: int | None = None,
    pacer: Pacer | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> SyncResult:
    """Build and send the events of a diff chunk by chunk; record each acknowledged or skipped row in the state.

    The caller holds the state's lock and has started the run (`store.begin_run()`); it commits after.
    """
    result = SyncResult()
    diff = diff.cast(DIFF_SCHEMA)  # type: ignore[arg-type]
    for offset in range(0, diff.height, chunk_rows):
        rows = [DiffRow(*r) for r in diff.slice(offset, chunk_rows).iter_rows()]
        outcomes = list(build_outcomes(sync, rows, store.meta.sync_uuid, initial=initial))
        store.record((o.row.key, o.row.after) for o in outcomes if o.skipped)
        result.skipped += sum(o.skipped for o in outcomes)
        for o in outcomes:
            if o.rejected is not None:
                rejected.add(o.row.key, o.row.kind, o.rejected)
        events = [o.event for o in outcomes if o.event is not None]
        report = deliver(
            [e.payload for e in events],
            transport,
            _recorder(store, events),
            policy=policy,
            max_batch_bytes=max_batch_bytes,
            pacer=pacer,
        )
        for i, reason in report.rejected:
            rejected.add(events[i].row.key, events[i].row.kind, reason)
        not_acked = {i for i, _ in report.rejected} | set(report.undelivered)
        result.sent.update(e.name or e.type for i, e in enumerate(events) if i not in not_acked)
        result.batches += report.batches
        result.requests += report.requests
        result.retries += report.retries
        result.bytes_sent += report.bytes_sent
        if report.undelivered:
            result.undelivered_by_kind.update(events[i].row.kind for i in report.undelivered)
            result.undelivered_by_kind.update(diff[KIND].slice(offset + chunk_rows).to_list())
            result.undelivered_reason = report.undelivered_reason
            break
    return result


def _recorder(store: SyncState, events: list[Event]) -> Callable[[Sequence[int]], None]:
    def record(acknowledged: Sequence[int]) -> None:
        store.record((events[i].row.key, events[i].row.after) for i in acknowledged)

    return record
