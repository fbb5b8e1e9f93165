"""Names and places shared by the assets: asset keys, resource keys, file paths, presentation."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from segment_sync.resources import StateResource, WarehouseResource

WAREHOUSE, SEGMENT, STATE = "segment_sync_warehouse", "segment_sync_segment", "segment_sync_state"


def snapshot_key(model: str) -> dg.AssetKey:
    """The key of a model's snapshot asset."""
    return dg.AssetKey(["snapshot", model])


def diff_key(sync: str) -> dg.AssetKey:
    """The key of a sync's diff asset."""
    return dg.AssetKey(["diff", sync])


def segment_key(sync: str) -> dg.AssetKey:
    """The key of a sync's delivery asset."""
    return dg.AssetKey(["segment", sync])


def table_key(table: str) -> dg.AssetKey:
    """The key of a warehouse table (dots split into path parts)."""
    return dg.AssetKey(["warehouse", *table.split(".")])


def sync_pool(sync: str) -> str:
    """The Dagster concurrency pool of a sync's diff and delivery (limit it to 1)."""
    return f"segment_sync/{sync}"


@dataclass(frozen=True)
class AssetOptions:
    """How the assets of one component present themselves in the UI, and what triggers them."""

    group_name: str = "segment_sync"
    owners: tuple[str, ...] = ()
    warehouse_kind: str | None = None


def state_of(context: dg.AssetExecutionContext) -> StateResource:
    return getattr(context.resources, STATE)


def warehouse_of(context: dg.AssetExecutionContext) -> WarehouseResource:
    return getattr(context.resources, WAREHOUSE)


@contextlib.contextmanager
def state_errors_as_failures() -> Iterator[None]:
    """A busy lock or unusable state fails the run with its message (and sends nothing)."""
    from segment_sync.storage.state import StateError  # imported at run time: state.py loads Polars

    try:
        yield
    except StateError as exc:
        raise dg.Failure(str(exc)) from None
