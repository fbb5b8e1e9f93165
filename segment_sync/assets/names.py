"""Names and places shared by the assets: asset keys, resource keys, file paths, presentation."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from segment_sync.resources import SegmentResource, StateResource, WarehouseResource


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


def stage_group(group_name: str, stage: str) -> str:
    """The asset group of one stage (warehouse, snapshot, diff, segment): the lineage reads as a band per stage."""
    return f"{group_name}_{stage}"


def engine_kinds(engine: str, warehouse_kind: str | None) -> set[str]:
    """The kinds the UI shows for a stage: the engine's tool (Polars, or SQL in the warehouse) and the warehouse."""
    return {"polars" if engine == "polars" else "sql", *([warehouse_kind] if warehouse_kind else [])}


def sync_pool(sync: str) -> str:
    """The Dagster concurrency pool of a sync's diff and delivery (limit it to 1)."""
    return f"segment_sync/{sync}"


@dataclass(frozen=True)
class ResourceKeys:
    """The keys of one component's resources, `<group>_warehouse`, `<group>_segment` and `<group>_state`, so that
    components of different groups, reading different warehouses, load into one code location."""

    group_name: str = "segment_sync"

    @property
    def warehouse(self) -> str:
        return f"{self.group_name}_warehouse"

    @property
    def segment(self) -> str:
        return f"{self.group_name}_segment"

    @property
    def state(self) -> str:
        return f"{self.group_name}_state"

    def warehouse_of(self, context: dg.AssetExecutionContext) -> WarehouseResource:
        return getattr(context.resources, self.warehouse)

    def segment_of(self, context: dg.AssetExecutionContext) -> SegmentResource:
        return getattr(context.resources, self.segment)

    def state_of(self, context: dg.AssetExecutionContext) -> StateResource:
        return getattr(context.resources, self.state)


@dataclass(frozen=True)
class AssetOptions:
    """How the assets of one component present themselves in the UI, and what triggers them."""

    group_name: str = "segment_sync"
    owners: tuple[str, ...] = ()
    warehouse_kind: str | None = None

    @property
    def resource_keys(self) -> ResourceKeys:
        return ResourceKeys(self.group_name)


@contextlib.contextmanager
def state_errors_as_failures() -> Iterator[None]:
    """A busy lock or unusable state fails the run with its message (and sends nothing)."""
    from segment_sync.storage.state import StateError  # imported at run time: state.py loads Polars

    try:
        yield
    except StateError as exc:
        raise dg.Failure(str(exc)) from None
