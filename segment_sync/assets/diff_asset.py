"""diff/<sync>: what changed since the sync last delivered, with its blocking guard."""

import dagster as dg
import orjson
import polars as pl
from pydantic import Field

from segment_sync.assets.layout import (
    SEGMENT,
    STATE,
    AssetOptions,
    SyncFiles,
    diff_key,
    snapshot_key,
    snapshot_path,
    state_errors_as_failures,
    state_of,
    sync_pool,
)
from segment_sync.diff import DIFF_SCHEMA, compute_diff, count_kinds, current_contents, resync_diff
from segment_sync.encoding import row_contents
from segment_sync.guards import change_size_problems, column_kinds, kind_changes
from segment_sync.metadata import markdown_table
from segment_sync.snapshot import key_problems, missing_columns, split_null_keys
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.state import SyncState, atomic_write, write_parquet_atomic

GUARD_CHECK = "change_within_limits"


class DiffConfig(dg.Config):
    """Run configuration of a sync's diff."""

    approve_large_change: bool = Field(
        default=False, description="Send this run's diff even if it is larger than the sync's limits."
    )
    full_resync: bool = Field(
        default=False,
        description="Send every current row as added, with new messageIds (Segment dedupes only about 24 h).",
    )
    reset: bool = Field(
        default=False, description="Forget what was delivered, sending nothing; the next run treats every row as added."
    )


def build_diff_asset(
    sync: SyncSpec, model: ModelSpec, options: AssetOptions, declared: str, automation: dg.AutomationCondition | None
) -> dg.AssetsDefinition:
    """The asset that diffs a model snapshot against what the sync last delivered, with its blocking guard.

    `declared` says where the sync is configured, for the error about a column the model lacks.
    """
    key = diff_key(sync.name)
    guard = dg.AssetCheckSpec(
        GUARD_CHECK,
        asset=key,
        blocking=True,
        description="The diff is not suspiciously large and no sent column changed its kind of value.",
    )

    @dg.asset(
        key=key,
        deps=[snapshot_key(model.name)],
        group_name=options.group_name,
        owners=list(options.owners),
        kinds={"polars"},
        automation_condition=automation,
        check_specs=[guard],
        pool=sync_pool(sync.name),
        description=f"Rows of `{model.name}` added, changed or removed since sync `{sync.name}` last delivered.",
        required_resource_keys={STATE, SEGMENT},
    )
    def _diff(context: dg.AssetExecutionContext, config: DiffConfig) -> dg.MaterializeResult:
        root = state_of(context).root()
        path = snapshot_path(root, model.name)
        if not path.exists():
            raise dg.Failure(f"sync {sync.name!r}: no snapshot of model {model.name!r} yet; run the sync's job")
        snapshot = pl.read_parquet(path)
        missing = missing_columns(snapshot, sync.sent_columns)
        if missing:
            raise dg.Failure(
                f"sync {sync.name!r}: model {model.name!r} has no column {', '.join(map(repr, missing))}; "
                f"its columns are {', '.join(snapshot.columns)}. Fix the sync's mapping ({declared}) or the "
                "model's query."
            )
        if key_problems(snapshot, model.key_columns).duplicate_keys:
            raise dg.Failure(f"sync {sync.name!r}: model {model.name!r} has duplicate primary keys")
        complete, null_keys = split_null_keys(snapshot, model.key_columns)
        kinds = column_kinds(snapshot.schema, sync.sent_columns)
        files = SyncFiles(root, sync.name)
        with state_errors_as_failures():
            store = SyncState(files.folder, sync.name)
            with store.lock():
                store.recover()
                if config.reset:
                    backup = store.reset()
                    context.log.warning(f"sync {sync.name!r}: state reset; the old state is kept at {backup}")
                current = current_contents(complete, model.key_columns, sync.sent_columns)
                if config.reset:
                    diff = pl.DataFrame(schema=DIFF_SCHEMA)
                elif config.full_resync:
                    diff = resync_diff(current, store.meta.generation)
                else:
                    diff = compute_diff(current, store.delivered())
                initial = not store.meta.baseline_done and not config.full_resync
                counts = count_kinds(diff)
                delivered_rows = store.delivered_row_count()
                pending = store.meta.pending
                deliberate = initial or config.full_resync or config.reset
                problems = [] if deliberate else change_size_problems(sync, counts, delivered_rows, pending)
                problems += kind_changes(store.meta.column_kinds, kinds)
                info = {
                    "generation": store.meta.generation,
                    "initial": initial,
                    "reset": config.reset,
                    "column_kinds": kinds,
                    "null_key_rows": row_contents(null_keys, sync.sent_columns),
                }
                write_parquet_atomic(diff, files.diff)
                atomic_write(files.diff_info, orjson.dumps(info))
        approved = bool(problems) and config.approve_large_change
        return dg.MaterializeResult(
            metadata={
                **counts,
                "dagster/row_count": diff.height,
                "rows_last_delivered": delivered_rows,
                "null_key_rows": null_keys.height,
                "initial_run": initial,
                "full_resync": config.full_resync,
                "reset": config.reset,
                "preview": dg.MetadataValue.md(markdown_table(diff.head(10))),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=GUARD_CHECK,
                    passed=not problems or approved,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=_guard_description(sync.name, problems, approved),
                    metadata={"problems": dg.MetadataValue.json(problems), "approved": approved, **counts},
                )
            ],
        )

    return _diff


def _guard_description(sync_name: str, problems: list[str], approved: bool) -> str | None:
    if not problems:
        return None
    if approved:
        return "Approved for this run: " + "; ".join(problems)
    return (
        f"Nothing was sent: {'; '.join(problems)}. If this change is intended, run the job `sync_{sync_name}` "
        "once with `ops: {diff__" + sync_name + ": {config: {approve_large_change: true}}}`."
    )
