"""A sync's state moved between the engines, both ways, so a team can switch engines without a resend."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from segment_sync.storage.state import StateError, SyncState
from segment_sync.warehouse_engine.warehouse_state import WarehouseState

BATCH_ROWS = 200_000


def move_to_warehouse(local: SyncState, remote: WarehouseState) -> int:
    """Copy a sync's local state into the warehouse's tables; returns the rows moved. Refuses to overwrite."""
    with local.lock(), remote.lock():
        local.recover()
        remote.recover()
        _refuse_if_used(remote.meta.baseline_done or remote.delivered_row_count() > 0, local.sync_name, "warehouse")
        return remote.take_over(local.meta, _slices(local.delivered().collect(engine="streaming")))


def move_to_local(remote: WarehouseState, local: SyncState) -> int:
    """Copy a sync's state from the warehouse's tables into a local state folder; returns the rows moved."""
    with remote.lock(), local.lock():
        remote.recover()
        local.recover()
        _refuse_if_used(local.meta.baseline_done or local.delivered_row_count() > 0, local.sync_name, "local folder")
        return local.take_over(remote.meta, remote.delivered_frames(BATCH_ROWS))


def _slices(frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
    for offset in range(0, frame.height, BATCH_ROWS):
        yield frame.slice(offset, BATCH_ROWS)


def _refuse_if_used(used: bool, sync: str, where: str) -> None:
    if used:
        raise StateError(
            f"sync {sync!r} already has state in the {where}; moving would overwrite it. Reset it there first "
            "(diff config reset: true) if that state is not needed."
        )
