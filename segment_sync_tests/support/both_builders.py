"""Events built both ways, by the columnar builder and the row-wise reference, for tests that compare them."""

from __future__ import annotations

import polars as pl

from segment_sync.diff.keyed_diff import compute_diff
from segment_sync.events.frame_builder import PAYLOAD, build_event_frame, outcome_columns
from segment_sync.events.row_builder import DiffRow, build_outcomes
from segment_sync.spec import SyncSpec
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, DELIVERED_SCHEMA, HASH, KEY, KIND
from segment_sync_tests.support.warehouse_rows import SYNC_UUID


def row_wise(sync: SyncSpec, diff: pl.DataFrame, *, initial: bool = False) -> pl.DataFrame:
    """The event frame the row-wise reference (`build_outcomes`) builds for a diff."""
    rows = [DiffRow(*r) for r in diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]
    outcomes = list(build_outcomes(sync, rows, SYNC_UUID, initial=initial))
    return diff.select(KEY, KIND, AFTER, HASH).hstack(outcome_columns(outcomes))


def identify_sync(columns: list[str]) -> SyncSpec:
    """An identify sync of model "m" sending `columns` as traits."""
    return SyncSpec(name="s", model="m", type="identify", user_id="uid", fields=columns)


def payloads_both_ways(snapshot: pl.DataFrame, sync: SyncSpec) -> list[list[bytes]]:
    """The events of every row as added, from the columnar builder and from the row-wise builder."""
    empty = pl.LazyFrame(schema=DELIVERED_SCHEMA)
    diff = compute_diff(snapshot, ["id"], sync.sent_columns, empty).collect()
    columnar = build_event_frame(sync, diff, SYNC_UUID, initial=False)[PAYLOAD].to_list()
    row_wise_built = row_wise(sync, diff)[PAYLOAD].to_list()
    return [columnar, row_wise_built]
