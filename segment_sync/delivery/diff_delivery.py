"""One delivery of a sync's diff: events built and sent in chunks, state advanced only for what was accepted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import polars as pl

from segment_sync.events.frame_builder import (
    MESSAGE_ID,
    NAME,
    OUTCOME,
    PAYLOAD,
    REASON,
    TYPE,
    build_event_frame,
    split_identity_changes,
)
from segment_sync.segment_api.batching import Joined, Payloads
from segment_sync.segment_api.client import RetryPolicy, deliver
from segment_sync.segment_api.pacing import Pacer
from segment_sync.segment_api.transport import Transport
from segment_sync.spec import SyncSpec
from segment_sync.storage.run_log import CallLog, RunLog
from segment_sync.storage.state import DryRunState, SyncState
from segment_sync.values.row_columns import AFTER, BEFORE, CONTENT, DIFF_SCHEMA, HASH, KEY, KIND

CHUNK_ROWS = 50_000
T = TypeVar("T")
NOT_ATTEMPTED = "not attempted: sending stopped earlier in the run"


@dataclass
class SyncResult:
    """What one delivery did."""

    sent: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    undelivered_by_kind: Counter[str] = field(default_factory=Counter)
    undelivered_reason: str | None = None
    rejected_by_segment: int = 0  # events Segment answered with a 4xx
    rejected_reason: str | None = None  # the first such answer
    batches: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0

    @property
    def undelivered(self) -> int:
        """Rows of the diff neither acknowledged nor rejected, because sending stopped."""
        return sum(self.undelivered_by_kind.values())

    @property
    def all_rejected(self) -> bool:
        """Whether Segment rejected every event it was sent (and was sent at least one)."""
        return self.rejected_by_segment > 0 and not self.sent


def diff_chunks(diff: pl.DataFrame | pl.LazyFrame, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The diff's rows in order, `chunk_rows` at a time, never collected whole.

    A lazy diff is read one slice at a time, so it must give the same rows in the same order on every read
    (a Parquet scan does, and only reads the row groups each slice needs).
    """
    lazy = diff.lazy()
    offset = 0
    while True:
        chunk = lazy.slice(offset, chunk_rows).collect()
        if chunk.is_empty():
            return
        yield chunk
        offset += chunk.height


def deliver_diff(
    sync: SyncSpec,
    diff: pl.DataFrame | pl.LazyFrame,
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
    removed_at: str | None = None,
    **delivery_options: Any,
) -> SyncResult:
    """Build and send the events of a diff chunk by chunk; record each acknowledged or skipped row in the state.

    Every row's outcome goes to `log`, every API call to `calls`; `delivery_options` go to `delivery.deliver`.
    `removed_at` is when the snapshot was taken (the time of removed rows' events). The caller holds the state's
    lock and has started the run (`store.begin_run()`); it commits after.
    """
    result = SyncResult()
    skip_reason = (
        pl.lit("initial run, and send_initial is off")
        if initial and not sync.sends_initial
        else pl.concat_str([pl.lit(f"sync {sync.name!r} sends nothing for a "), pl.col(KIND), pl.lit(" row")])
    )
    done = 0

    def prepare(chunk: pl.DataFrame) -> tuple[int, pl.DataFrame, pl.DataFrame, Payloads, Joined, dict[int, int]]:
        rows = split_identity_changes(sync, chunk.cast(DIFF_SCHEMA), store.meta.generation)  # type: ignore[arg-type]
        built = build_event_frame(sync, rows, store.meta.sync_uuid, initial=initial, removed_at=removed_at)
        built = built.with_columns(rows[BEFORE])
        events = built.filter(pl.col(OUTCOME) == "event")
        lines = Joined.from_series(store.journal_lines(_state_rows(events)))
        waits = _enters_after_exits(events) if sync.type == "audience" else {}
        return chunk.height, built, events, Payloads.from_series(events[PAYLOAD]), lines, waits

    for height, built, events, payloads, lines, waits in _one_ahead(map(prepare, diff_chunks(diff, chunk_rows))):
        done += height
        skipped = built.filter(pl.col(OUTCOME) == "skipped")
        store.record_file(_state_rows(skipped))
        result.skipped += skipped.height
        log.add_frame(
            built.filter(pl.col(OUTCOME) != "event").select(
                pl.col(KEY).alias("key"),
                pl.col(KIND).alias("kind"),
                pl.col(OUTCOME).alias("status"),
                pl.when(pl.col(OUTCOME) == "skipped").then(skip_reason).otherwise(pl.col(REASON)).alias("reason"),
            )
        )
        report = deliver(
            payloads,
            transport,
            _recorder(store, lines, waits),
            policy=policy,
            max_batch_bytes=max_batch_bytes,
            pacer=pacer,
            on_call=calls,
            **delivery_options,
        )
        sent = _event_log(events, report.rejected, report.undelivered, report.undelivered_reason)
        log.add_frame(sent)
        result.sent.update(_counts(sent.filter(pl.col("status") == "delivered"), "event"))
        result.rejected_by_segment += len(report.rejected)
        if report.rejected and result.rejected_reason is None:
            result.rejected_reason = report.rejected[0][1]
        result.batches += report.batches
        result.requests += report.requests
        result.retries += report.retries
        result.bytes_sent += report.bytes_sent
        if report.undelivered:
            result.undelivered_by_kind.update(_counts(sent.filter(pl.col("status") == "undelivered"), "kind"))
            for rest in diff_chunks(diff.lazy().slice(done).select(KEY, KIND), chunk_rows):
                result.undelivered_by_kind.update(_counts(rest, KIND))
                log.add_frame(
                    rest.select(
                        pl.col(KEY).alias("key"),
                        pl.col(KIND).alias("kind"),
                        pl.lit("undelivered").alias("status"),
                        pl.lit(NOT_ATTEMPTED).alias("reason"),
                    )
                )
            result.undelivered_reason = report.undelivered_reason
            break
    return result


def _state_rows(built: pl.DataFrame) -> pl.DataFrame:
    """Rows as the state records them once delivered or skipped: the content last sent (null for a removed row).

    A changed row that sent nothing keeps the content sent before, under its new hash, so that its removal (or an
    audience member's exit) later carries what was sent, and the row is not diffed again until it changes.
    """
    kept = (pl.col(KIND) == "changed") & (pl.col(OUTCOME) == "skipped")
    return built.select(KEY, pl.when(kept).then(pl.col(BEFORE)).otherwise(pl.col(AFTER)).alias(CONTENT), HASH)


def _enters_after_exits(events: pl.DataFrame) -> dict[int, int]:
    """For an audience member who exits and enters as another identity: the index of the enter, and of its exit."""
    pairs = events.with_row_index("_i").filter(pl.col(KEY).is_duplicated())
    if pairs.is_empty():
        return {}
    exits = pairs.filter(pl.col(KIND) == "removed").select(KEY, pl.col("_i").alias("_exit"))
    enters = pairs.filter(pl.col(KIND) == "added").select(KEY, pl.col("_i").alias("_enter"))
    return dict(enters.join(exits, on=KEY).select("_enter", "_exit").iter_rows())


def _event_log(
    events: pl.DataFrame,
    rejected: Sequence[tuple[int, str]],
    undelivered: Sequence[int],
    undelivered_reason: str | None,
) -> pl.DataFrame:
    """The row log of a chunk's events: delivered, rejected by Segment or undelivered."""
    status = pl.repeat("delivered", events.height, dtype=pl.String, eager=True)
    reason = pl.repeat(None, events.height, dtype=pl.String, eager=True)
    if rejected:
        indices = [i for i, _ in rejected]
        status.scatter(indices, "rejected")
        reason.scatter(indices, [text for _, text in rejected])
    if undelivered:
        status.scatter(undelivered, "undelivered")
        reason.scatter(undelivered, undelivered_reason)
    return events.select(
        pl.col(KEY).alias("key"),
        pl.col(KIND).alias("kind"),
        pl.coalesce(NAME, TYPE).alias("event"),
        pl.col(MESSAGE_ID).alias("message_id"),
        pl.lit(status).alias("status"),
        pl.lit(reason).alias("reason"),
    )


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    return dict(frame.group_by(column).len().iter_rows())


def _one_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of an iterator, each next one made in a thread while the caller works on the current one."""
    with ThreadPoolExecutor(1) as pool:  # Polars releases the GIL: building overlaps with sending
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _recorder(store: SyncState | DryRunState, lines: Joined, waits: dict[int, int]) -> Callable[[Sequence[int]], None]:
    """Notes acknowledged events in the state, from journal lines made ahead (one write and fsync a batch).

    An enter that `waits` for its exit is noted only once the exit is: until then the next run sends both again
    (the same messageIds), so the old identity always exits.
    """
    if not waits:
        return lambda acknowledged: store.record_lines(lines.spans(acknowledged))
    noted: set[int] = set()
    held: dict[int, int] = {}  # exit -> its enter, acknowledged first

    def record(acknowledged: Sequence[int]) -> None:
        now = []
        for i in sorted(acknowledged):
            exit_ = waits.get(i)
            if exit_ is not None and exit_ not in noted:
                held[exit_] = i
                continue
            now.append(i)
            noted.add(i)
            if i in held:
                now.append(held.pop(i))
        store.record_lines(lines.spans(now))

    return record
