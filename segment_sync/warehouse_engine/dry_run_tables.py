"""A dry run's own tables in the warehouse: made under a lease of their own, dropped when the run ends, and swept
by a later run of the sync when the dry run died (its lease expired)."""

from __future__ import annotations

import sqlalchemy as sa

from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.warehouse_engine.lease import expired_leases
from segment_sync.warehouse_engine.state_tables import StateTables

LEASE_PREFIX = "dry_run:"


def dry_run_lease(scratch: StateTables, sync: SyncSpec) -> str:
    """The name of the lease a dry run holds while its tables exist (`scratch`: its copy of the tables)."""
    return f"{LEASE_PREFIX}{scratch.scratch}:{sync.name}"


def drop_scratch(engine: sa.Engine, scratch: StateTables, model: ModelSpec, sync: SyncSpec) -> None:
    """Drop a dry run's own snapshot, diff and work tables, and the note of its snapshot."""
    with engine.begin() as conn:
        _drop(conn, scratch, model, sync)


def sweep_dead_dry_runs(engine: sa.Engine, tables: StateTables, sync: SyncSpec, model: ModelSpec) -> int:
    """Drop the tables of the sync's dry runs that died (their lease expired, so none is running); return how many
    dry runs' tables were dropped."""
    with engine.connect() as conn:
        dead = [
            held
            for held in expired_leases(conn, tables, LEASE_PREFIX)
            if held["sync"].endswith(f":{sync.name}") and held["sync"].count(":") == 2
        ]
    leases = tables.leases
    swept = 0
    for held in dead:
        scratch = StateTables(tables.schema, scratch=held["sync"].split(":")[1])
        with engine.begin() as conn:  # taken over only if no one renewed or swept it meanwhile
            taken = conn.execute(
                sa.delete(leases).where(
                    leases.c.sync == held["sync"],
                    leases.c.holder == held["holder"],
                    leases.c.renewed_at == held["renewed_at"],
                )
            )
            if taken.rowcount == 1:
                _drop(conn, scratch, model, sync)
                swept += 1
    return swept


def _drop(conn: sa.Connection, scratch: StateTables, model: ModelSpec, sync: SyncSpec) -> None:
    if not scratch.scratch:
        raise ValueError("only a scratch copy's tables are dropped")
    metadata = sa.MetaData(schema=scratch.schema)
    names = [
        scratch.snapshot_name(model.name),
        scratch.snapshot_name(model.name, following=True),
        scratch.diff_name(sync.name),
        scratch.diff_name(sync.name, following=True),
        scratch.work_name("news", sync.name),
        scratch.work_name("olds", sync.name),
    ]
    for name in names:
        sa.Table(name, metadata).drop(conn, checkfirst=True)
    noted = scratch.snapshots
    conn.execute(sa.delete(noted).where(noted.c.model == scratch.snapshot_noted_as(model.name)))
