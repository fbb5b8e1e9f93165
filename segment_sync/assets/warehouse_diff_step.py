"""What diff/<sync> does on the warehouse engine: the changed keys found by SQL, read out and checked by content."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from segment_sync.assets.diff_step import check_sent_columns, guard_check, guard_problems
from segment_sync.assets.names import ResourceKeys
from segment_sync.assets.run_config import DiffConfig
from segment_sync.assets.warehouse_connection import WarehouseConnection, warehouse_connection
from segment_sync.diff.guards import column_kinds
from segment_sync.diff.keyed_diff import UNCHANGED
from segment_sync.metadata import markdown_table
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.state import iter_parquet
from segment_sync.values.row_columns import AFTER, BEFORE_GEN, CONTENT, GEN, HASH, KEY, KIND
from segment_sync.warehouse_engine import sql_diff
from segment_sync.warehouse_engine.dry_run_tables import sweep_dead_dry_runs
from segment_sync.warehouse_engine.key_sql import key_type_of
from segment_sync.warehouse_engine.warehouse_state import WarehouseState


@dataclass(frozen=True)
class WarehouseDiff:
    """A sync's changes found in the warehouse: their counts, the guard's problems, what the delivery needs."""

    counts: dict[str, int]
    preview: pl.DataFrame
    refreshed: int
    initial: bool
    delivered_rows: int
    problems: list[str]
    info: dict


def materialize_warehouse_diff(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    config: DiffConfig,
    sync: SyncSpec,
    model: ModelSpec,
    declared: str,
) -> dg.MaterializeResult:
    """Fill `<state_schema>.diff__<sync>` with the sync's changes; the result carries the guard check."""
    with warehouse_connection(context, keys, f"sync {sync.name!r}") as warehouse:
        store = warehouse.state(sync.name, context.run.run_id)
        with store.lock():
            diff = find_warehouse_diff(warehouse, store, config, sync, model, declared, context.log)
            store.save_diff_info(diff.info)
        table = f"{warehouse.tables.schema}.{warehouse.tables.diff_name(sync.name)}"
    return dg.MaterializeResult(
        metadata={
            **diff.counts,
            "dagster/row_count": sum(diff.counts.values()),
            "dagster/table_name": table,
            "engine": "warehouse",
            "rows_last_delivered": diff.delivered_rows,
            "hashes_refreshed": diff.refreshed,
            "initial_run": diff.initial,
            "full_resync": config.full_resync,
            "reset": config.reset,
            "preview": dg.MetadataValue.md(markdown_table(diff.preview)),
        },
        check_results=[
            guard_check(sync, diff.problems, config, diff.counts, diff.delivered_rows, initial=diff.initial)
        ],
    )


def find_warehouse_diff(
    warehouse: WarehouseConnection,
    store: WarehouseState,
    config: DiffConfig,
    sync: SyncSpec,
    model: ModelSpec,
    declared: str,
    log: dg.DagsterLogManager,
    *,
    dry_run: bool = False,
) -> WarehouseDiff:
    """Fill the sync's diff table from the model's snapshot table (the sync's lease held).

    A `dry_run` changes nothing in the state: rows whose hash alone moved are counted out, not noted, and what the
    diff found is returned, not kept.
    """
    url, engine, tables = warehouse.url, warehouse.engine, warehouse.tables
    noted = sql_diff.snapshot_note(engine, tables, model)
    if noted is None:
        raise dg.Failure(f"sync {sync.name!r}: no snapshot of model {model.name!r} yet; run the sync's job")
    taken_at, snapshot_rows = noted
    schema = sql_diff.snapshot_schema(url, engine, tables, model)
    check_sent_columns(sync, model, list(schema), declared)
    store.recover()
    swept = sweep_dead_dry_runs(engine, tables, sync, model)
    if swept:
        log.info(f"sync {sync.name!r}: dropped the tables of {swept} dry runs that died before dropping them")
    key_type, kept_type = key_type_of(schema, model) or "unsupported", store.key_type()
    if kept_type not in (None, key_type) and not config.reset and store.delivered_row_count():
        raise dg.Failure(
            f"sync {sync.name!r}: the primary key of model {model.name!r} is now {key_type} but the delivered "
            f"rows were keyed as {kept_type}; their keys as text may no longer match (1 and '01'), so nothing "
            "was sent. Cast the key back in the model's query, or reset the sync (diff config reset: true) "
            "to send every row again as added."
        )
    if not dry_run:
        store.note_key_type(key_type)
    refreshed = 0
    if config.reset:
        backup = store.reset()
        log.warning(f"sync {sync.name!r}: state reset; the old state is kept in {backup}")
        sql_diff.clear_changes(engine, tables, sync)
        counts = {"added": 0, "changed": 0, "removed": 0}
    elif config.full_resync:  # every current row sent again as added, with new messageIds
        counts = sql_diff.find_changes(engine, tables, sync, model, trust_hashes=True, full_resync=True)
    else:
        basis = sql_diff.hash_basis(engine, tables, sync, model, schema)
        trusted = store.meta.hash_basis == basis
        counts = sql_diff.find_changes(engine, tables, sync, model, trust_hashes=trusted)
        # Trusted, a moved hash is a changed row (the delivery reads it out once and compares it). Made on
        # another basis, rows whose hash moved are compared by content now, and those alike refreshed.
        if not trusted and counts["changed"]:
            with tempfile.TemporaryDirectory(prefix="segment-sync-changes-") as folder:
                path = Path(folder) / "changes.parquet"
                sql_diff.write_changes(url, engine, tables, sync, model, path, only_changed=True)
                refreshed = _unchanged_rows(path) if dry_run else _refresh_unchanged_hashes(store, path)
            if dry_run:  # the delivery drops them as it reads the changes
                counts["changed"] -= refreshed
            elif refreshed:
                store.recover()
                log.info(f"sync {sync.name!r}: {refreshed:,} rows had a new hash but no change")
                counts = sql_diff.find_changes(engine, tables, sync, model, trust_hashes=True)
        if not dry_run:
            store.note_hash_basis(basis)
    preview = pl.DataFrame() if config.reset else sql_diff.changed_keys(engine, tables, sync, limit=10)
    initial = not store.meta.baseline_done and not config.full_resync
    null_key_rows = sql_diff.null_key_contents(url, engine, tables, sync, model)
    if config.reset or config.full_resync:  # the counts do not tell the delivered rows apart
        delivered_rows = store.delivered_row_count()
    else:
        delivered_rows = sql_diff.live_rows_before(counts, snapshot_rows - len(null_key_rows))
    kinds = column_kinds(schema, sync.sent_columns)
    problems = guard_problems(sync, config, counts, delivered_rows, store.meta, kinds, initial=initial)
    info = {
        "generation": store.meta.generation,
        "initial": initial,
        "reset": config.reset,
        "full_resync": config.full_resync,
        "column_kinds": kinds,
        "null_key_rows": null_key_rows,
        "snapshot_taken_at": taken_at,
    }
    return WarehouseDiff(counts, preview, refreshed, initial, delivered_rows, problems, info)


def _unchanged_rows(path: Path) -> int:
    """How many rows of a changes file did not change in content."""
    return pl.scan_parquet(path).filter(pl.col(KIND) == UNCHANGED).select(pl.len()).collect().item()


def _refresh_unchanged_hashes(store: WarehouseState, path: Path, chunk_rows: int = 100_000) -> int:
    """Note the new hash of rows whose content did not change; return how many."""
    refreshed = 0
    for batch in iter_parquet(path, chunk_rows, columns=[KEY, KIND, AFTER, HASH, BEFORE_GEN]):
        notes = batch.filter(pl.col(KIND) == UNCHANGED)
        store.record_file(notes.select(KEY, pl.col(AFTER).alias(CONTENT), HASH, pl.col(BEFORE_GEN).alias(GEN)))
        refreshed += notes.height
    return refreshed
