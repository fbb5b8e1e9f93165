"""What diff/<sync> does when it materializes: diff the snapshot against what the sync delivered, then guard it."""

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import orjson
import polars as pl

from segment_sync.assets.names import ResourceKeys, state_errors_as_failures
from segment_sync.assets.run_config import GUARD_CHECK, DiffConfig
from segment_sync.diff.guards import change_size_problems, column_kinds, kind_changes
from segment_sync.diff.keyed_diff import (
    SLICES_FOLDER_PREFIX,
    UNCHANGED,
    compute_diff,
    count_kinds,
    empty_diff,
    resync_diff,
)
from segment_sync.metadata import diff_preview
from segment_sync.snapshot.key_checks import split_null_keys
from segment_sync.snapshot.row_hash import hash_basis, model_columns
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage import durable_file
from segment_sync.storage.layout import SyncFolder, file_identity, snapshot_checks_path, snapshot_path
from segment_sync.storage.state import SyncMeta, SyncState, iter_parquet, sink_parquet_atomic, write_parquet_atomic
from segment_sync.values.encoding import key_strings, row_contents
from segment_sync.values.row_columns import AFTER, BEFORE_GEN, CONTENT, GEN, HASH, KEY, KIND, ROW


@dataclass(frozen=True)
class DiffFiles:
    """Where a diff is written: the sync's own files, or a dry run's scratch copies."""

    diff: Path
    diff_info: Path


@dataclass(frozen=True)
class WrittenDiff:
    """A diff written to its file: its counts, the guard's problems and a preview without row values."""

    counts: dict[str, int]
    rows: int
    delivered_rows: int
    null_key_rows: int
    initial: bool
    problems: list[str]
    preview: pl.DataFrame


def materialize_diff(
    context: dg.AssetExecutionContext,
    keys: ResourceKeys,
    config: DiffConfig,
    sync: SyncSpec,
    model: ModelSpec,
    declared: str,
) -> dg.MaterializeResult:
    """Diff the model's snapshot against what the sync last delivered; the result carries the guard check."""
    root = keys.state_of(context).root()
    files = SyncFolder.of(root, sync.name)
    with state_errors_as_failures():
        store = SyncState(files.path, sync.name)
        with store.lock():
            diff = write_diff(
                store, snapshot_path(root, model.name), files, sync, model, config, declared, log=context.log
            )
    return dg.MaterializeResult(
        metadata={
            **diff.counts,
            "dagster/row_count": diff.rows,
            "rows_last_delivered": diff.delivered_rows,
            "null_key_rows": diff.null_key_rows,
            "initial_run": diff.initial,
            "full_resync": config.full_resync,
            "reset": config.reset,
            "preview": dg.MetadataValue.md(diff_preview(diff.preview, sync, values=sync.preview_values)),
        },
        check_results=[
            guard_check(sync, diff.problems, config, diff.counts, diff.delivered_rows, initial=diff.initial)
        ],
    )


def write_diff(
    store: SyncState,
    path: Path,
    files: SyncFolder | DiffFiles,
    sync: SyncSpec,
    model: ModelSpec,
    config: DiffConfig,
    declared: str,
    *,
    log: dg.DagsterLogManager | None = None,
    dry_run: bool = False,
) -> WrittenDiff:
    """Diff the snapshot at `path` against the state into `files.diff` and `files.diff_info` (the state's lock held).

    A `dry_run` changes nothing in the state: rows whose hash alone moved are dropped, not noted.
    """
    if not path.exists():
        raise dg.Failure(f"sync {sync.name!r}: no snapshot of model {model.name!r} yet; run the sync's job")
    snapshot = pl.scan_parquet(path)
    schema = snapshot.collect_schema()
    check_sent_columns(sync, model, model_columns(schema), declared)
    complete, null_keys = split_null_keys(snapshot, model.key_columns)
    null_keys = null_keys.collect()
    if _has_duplicate_keys(path, complete, model.key_columns):
        raise dg.Failure(f"sync {sync.name!r}: model {model.name!r} has duplicate primary keys")
    kinds = column_kinds(schema, sync.sent_columns)
    basis = hash_basis(schema, sync.compared_columns)
    store.recover()
    if config.reset:
        backup = store.reset()
        if log:
            log.warning(f"sync {sync.name!r}: state reset; the old state is kept at {backup}")
        write_parquet_atomic(empty_diff(schema, sync.sent_columns), files.diff)
    else:
        if config.full_resync:
            diff = resync_diff(
                complete, model.key_columns, sync.sent_columns, store.meta.generation, sync.compared_columns
            )
        else:
            trusted = store.meta.hash_basis == basis
            _remove_stale_slices(store.folder.path)
            diff = compute_diff(
                complete,
                model.key_columns,
                sync.sent_columns,
                store.delivered(),
                trust_hashes=trusted,
                work_dir=store.folder.path,
                compared_columns=sync.compared_columns,
            )
        sink_parquet_atomic(diff, files.diff)
        if dry_run:
            sink_parquet_atomic(pl.scan_parquet(files.diff).filter(pl.col(KIND) != UNCHANGED), files.diff)
        else:
            refreshed = _refresh_unchanged_hashes(store, files.diff)
            if refreshed and log:
                log.info(f"sync {sync.name!r}: {refreshed:,} rows had a new hash but no change")
            store.note_hash_basis(basis)
    initial = not store.meta.baseline_done and not config.full_resync
    written = pl.scan_parquet(files.diff)
    counts = count_kinds(written)
    delivered_rows = store.delivered_row_count()
    problems = guard_problems(sync, config, counts, delivered_rows, store.meta, kinds, initial=initial)
    info = {
        "generation": store.meta.generation,
        "initial": initial,
        "reset": config.reset,
        "column_kinds": kinds,
        "null_key_rows": row_contents(null_keys, sync.sent_columns),
        "snapshot_taken_at": _taken_at(path),
    }
    durable_file.write_bytes(files.diff_info, orjson.dumps(info))
    return WrittenDiff(
        counts=counts,
        rows=written.select(pl.len()).collect().item(),
        delivered_rows=delivered_rows,
        null_key_rows=null_keys.height,
        initial=initial,
        problems=problems,
        preview=written.head(10).drop(HASH, ROW).collect(),
    )


def check_sent_columns(sync: SyncSpec, model: ModelSpec, columns: list[str], declared: str) -> None:
    """Fail, naming where the sync is declared, when the model lacks a column the sync sends."""
    missing = [c for c in sync.sent_columns if c not in columns]
    if missing:
        raise dg.Failure(
            f"sync {sync.name!r}: model {model.name!r} has no column {', '.join(map(repr, missing))}; "
            f"its columns are {', '.join(columns)}. Fix the sync's mapping ({declared}) or the model's query."
        )


def guard_problems(
    sync: SyncSpec,
    config: DiffConfig,
    counts: dict[str, int],
    delivered_rows: int,
    meta: SyncMeta,
    kinds: dict[str, str],
    *,
    initial: bool,
) -> list[str]:
    """Why the guard stops a diff: a change beyond the sync's size limits (which a first run, a full resync and a
    reset are exempt from) or a sent column whose kind of value changed."""
    sized = unguarded_reason(initial, config) is None
    problems = change_size_problems(sync, counts, delivered_rows, meta.pending) if sized else []
    return problems + kind_changes(meta.column_kinds, kinds)


def guard_check(
    sync: SyncSpec,
    problems: list[str],
    config: DiffConfig,
    counts: dict[str, int],
    delivered_rows: int,
    *,
    initial: bool,
) -> dg.AssetCheckResult:
    """The diff's blocking guard: passed when the change is within limits, or approved for this run; it says what
    the limits were, or why they did not apply."""
    approved = bool(problems) and config.approve_large_change
    unguarded = unguarded_reason(initial, config)
    return dg.AssetCheckResult(
        check_name=GUARD_CHECK,
        passed=not problems or approved,
        severity=dg.AssetCheckSeverity.ERROR,
        description=_guard_description(sync, problems, approved, delivered_rows, unguarded),
        metadata={
            "problems": dg.MetadataValue.json(problems),
            "approved": approved,
            "size_limits_applied": unguarded is None,
            **counts,
            **guard_limits(sync),
            "rows_last_delivered": delivered_rows,
        },
    )


def guard_limits(sync: SyncSpec) -> dict[str, float]:
    """The sync's guard limits, as the check's metadata shows them."""
    return {
        "max_removed_percent": sync.max_removed_percent,
        "max_added_percent": sync.max_added_percent,
        "guard_min_rows": sync.guard_min_rows,
    }


def _remove_stale_slices(folder: Path) -> None:
    """Remove a sliced diff's temporary folder left by a run that was killed (the state's lock is held)."""
    for stale in folder.glob(f"{SLICES_FOLDER_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def unguarded_reason(initial: bool, config: DiffConfig) -> str | None:
    """Why the guard's size limits do not apply to a diff, or None when they do."""
    if config.reset:
        return "a reset sends nothing and starts the sync's state over"
    if config.full_resync:
        return "a full resync sends every row again, as asked"
    if initial:
        return "the sync's first run sends every row as added"
    return None


def guard_verdict(problems: list[str], unguarded: str | None) -> str:
    """The guard's verdict in a few words, as a dry run reports it."""
    if problems:
        return "; ".join(problems)
    return f"size limits not applied: {unguarded}" if unguarded else "within limits"


def _guard_description(
    sync: SyncSpec, problems: list[str], approved: bool, delivered: int, unguarded: str | None
) -> str:
    sync_name = sync.name
    if not problems and unguarded:
        return f"Size limits not applied: {unguarded}. Column kinds checked: none changed."
    if not problems:
        return (
            f"Within limits: at most {sync.max_removed_percent:g}% of the {delivered:,} rows last delivered removed "
            f"and {sync.max_added_percent:g}% added; changes of fewer than {sync.guard_min_rows} rows always pass."
        )
    if approved:
        return "Approved for this run: " + "; ".join(problems)
    return (
        f"Nothing was sent: {'; '.join(problems)}. If this change is intended, run the job `sync_{sync_name}` "
        "once with `ops: {diff__" + sync_name + ": {config: {approve_large_change: true}}}`."
    )


def _snapshot_checks(path: Path) -> dict:
    """What the snapshot asset noted about this snapshot file ({} when the notes are of another file, or none)."""
    checks_path = snapshot_checks_path(path)
    if checks_path.exists():
        checks = orjson.loads(checks_path.read_bytes())
        if checks.get("file") == file_identity(path):
            return checks
    return {}


def _taken_at(path: Path) -> str:
    """When the snapshot's read began, as its check noted; else when its file was written (ISO 8601, UTC)."""
    noted = _snapshot_checks(path).get("taken_at")
    return noted or dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()


def _has_duplicate_keys(path: Path, snapshot: pl.LazyFrame, key_columns: list[str]) -> bool:
    """Whether two rows share a primary key, as the snapshot's check noted, or counted again if not noted.

    Normally the snapshot's blocking check stops a sync before its diff; this covers a diff run alone.
    """
    checks = _snapshot_checks(path)
    if checks:
        return bool(checks["duplicate_keys"])
    keys = snapshot.select(key_strings(snapshot, key_columns).alias(KEY))
    counts = keys.select(pl.col(KEY).n_unique().alias("unique"), pl.len().alias("rows")).collect(engine="streaming")
    return counts["unique"][0] != counts["rows"][0]


def _refresh_unchanged_hashes(store: SyncState, diff_path: Path, chunk_rows: int = 100_000) -> int:
    """Note the new hash of rows whose content did not change, and drop them from the diff; return how many."""
    unchanged = pl.scan_parquet(diff_path).filter(pl.col(KIND) == UNCHANGED)
    count = unchanged.select(pl.len()).collect().item()
    if not count:
        return 0
    for batch in iter_parquet(diff_path, chunk_rows, columns=[KEY, KIND, AFTER, HASH, BEFORE_GEN]):
        notes = batch.filter(pl.col(KIND) == UNCHANGED)
        store.record_file(notes.select(KEY, pl.col(AFTER).alias(CONTENT), HASH, pl.col(BEFORE_GEN).alias(GEN)))
    sink_parquet_atomic(pl.scan_parquet(diff_path).filter(pl.col(KIND) != UNCHANGED), diff_path)
    return count
