"""The asset factory: snapshot/<model>, diff/<sync> and segment/<sync> for each model and sync."""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import polars as pl

from segment_sync.diff import compute_diff, count_kinds, current_contents
from segment_sync.metadata import markdown_table, schema_metadata
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.snapshot import key_problems, missing_columns
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.state import StateError, SyncState, atomic_write, write_parquet_atomic
from segment_sync.sync_run import RejectedLog, deliver_diff
from segment_sync.warehouse import WarehouseError, read_model

WAREHOUSE, SEGMENT, STATE = "segment_sync_warehouse", "segment_sync_segment", "segment_sync_state"
PK_CHECK = "primary_key_unique_and_not_null"


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


def snapshot_path(root: Path, model: str) -> Path:
    """Where a model's latest snapshot is stored."""
    return root / "snapshots" / f"{model}.parquet"


def diff_paths(root: Path, sync: str) -> tuple[Path, Path]:
    """Where a sync's latest diff and its basis (state generation, initial run) are stored."""
    folder = root / "syncs" / sync
    return folder / "diff.parquet", folder / "diff.json"


def build_snapshot_asset(model: ModelSpec, group_name: str) -> dg.AssetsDefinition:
    """The asset that reads a model into a Parquet snapshot, with its blocking primary key check."""
    key = snapshot_key(model.name)
    check = dg.AssetCheckSpec(
        PK_CHECK, asset=key, blocking=True, description=f"Every {model.key_columns} value is present and unique."
    )

    @dg.asset(
        key=key,
        deps=[table_key(model.table)] if model.table else [],
        group_name=group_name,
        kinds={"polars"},
        check_specs=[check],
        description=f"Rows of model `{model.name}`, read from the warehouse into Parquet.",
        required_resource_keys={WAREHOUSE, STATE, SEGMENT},
    )
    def _snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        root = _state(context).root()
        try:
            frame = read_model(_warehouse(context).url(root), model)
        except WarehouseError as exc:
            raise dg.Failure(str(exc)) from None
        missing = missing_columns(frame, model.key_columns)
        if missing:
            raise dg.Failure(f"model {model.name!r}: the query returns no primary key column {missing}")
        path = snapshot_path(root, model.name)
        write_parquet_atomic(frame, path)
        problems = key_problems(frame, model.key_columns)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                **schema_metadata(frame),
                "preview": dg.MetadataValue.md(markdown_table(frame.head(10))),
                "path": dg.MetadataValue.path(str(path)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=PK_CHECK,
                    passed=problems.ok,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=None
                    if problems.ok
                    else f"{problems.null_rows} rows with a null key, {problems.duplicate_keys} duplicated keys: "
                    "nothing is sent until the model's primary key is unique and not null.",
                    metadata={
                        "null_key_rows": problems.null_rows,
                        "duplicate_keys": problems.duplicate_keys,
                        "duplicate_key_samples": dg.MetadataValue.json(problems.duplicate_samples),
                    },
                )
            ],
        )

    return _snapshot


def build_diff_asset(sync: SyncSpec, model: ModelSpec, group_name: str) -> dg.AssetsDefinition:
    """The asset that diffs a model snapshot against what the sync last delivered."""

    @dg.asset(
        key=diff_key(sync.name),
        deps=[snapshot_key(model.name)],
        group_name=group_name,
        kinds={"polars"},
        description=f"Rows of `{model.name}` added, changed or removed since sync `{sync.name}` last delivered.",
        required_resource_keys={STATE, SEGMENT},
    )
    def _diff(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        root = _state(context).root()
        path = snapshot_path(root, model.name)
        if not path.exists():
            raise dg.Failure(f"sync {sync.name!r}: no snapshot of model {model.name!r} yet; run the sync's job")
        snapshot = pl.read_parquet(path)
        missing = missing_columns(snapshot, sync.sent_columns)
        if missing:
            raise dg.Failure(
                f"sync {sync.name!r}: model {model.name!r} has no column {', '.join(map(repr, missing))}; "
                f"its columns are {', '.join(snapshot.columns)}. Fix the sync's mapping or the model's query."
            )
        if not key_problems(snapshot, model.key_columns).ok:
            raise dg.Failure(f"sync {sync.name!r}: model {model.name!r} has null or duplicate primary keys")
        with _state_errors_as_failures():
            store = SyncState(root / "syncs" / sync.name, sync.name)
            with store.lock():
                store.recover()
                current = current_contents(snapshot, model.key_columns, sync.sent_columns)
                diff = compute_diff(current, store.delivered())
                diff_file, info_file = diff_paths(root, sync.name)
                write_parquet_atomic(diff, diff_file)
                info = {"generation": store.meta.generation, "initial": not store.meta.baseline_done}
                atomic_write(info_file, orjson.dumps(info))
        counts = count_kinds(diff)
        return dg.MaterializeResult(
            metadata={
                **counts,
                "dagster/row_count": diff.height,
                "initial_run": info["initial"],
                "preview": dg.MetadataValue.md(markdown_table(diff.head(10))),
            }
        )

    return _diff


def build_segment_asset(sync: SyncSpec, group_name: str) -> dg.AssetsDefinition:
    """The asset that turns a sync's diff into events and delivers them."""

    @dg.asset(
        key=segment_key(sync.name),
        deps=[diff_key(sync.name)],
        group_name=group_name,
        kinds={"segment"},
        description=f"Events of sync `{sync.name}` ({sync.type}) delivered to Segment.",
        required_resource_keys={STATE, SEGMENT},
    )
    def _segment(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = time.monotonic()
        root = _state(context).root()
        segment: SegmentResource = getattr(context.resources, SEGMENT)
        diff_file, info_file = diff_paths(root, sync.name)
        rejected = RejectedLog(root / "syncs" / sync.name / "rejected" / f"{context.run.run_id}.jsonl")
        with _state_errors_as_failures():
            store = SyncState(root / "syncs" / sync.name, sync.name)
            with store.lock():
                info = orjson.loads(info_file.read_bytes()) if info_file.exists() else None
                if info is None or info["generation"] != store.meta.generation:
                    raise dg.Failure(
                        f"sync {sync.name!r}: the diff is missing or older than the sync's state; run the whole "
                        f"sync job (diff/{sync.name} then segment/{sync.name}), nothing was sent"
                    )
                store.begin_run()
                try:
                    result = deliver_diff(
                        sync,
                        pl.read_parquet(diff_file),
                        store,
                        segment.transport(root / "outbox" / f"{sync.name}.jsonl"),
                        rejected,
                        initial=info["initial"],
                        policy=segment.retry_policy(),
                        max_batch_bytes=segment.max_batch_bytes,
                    )
                finally:
                    rejected.close()
                store.commit()
        metadata = {
            "events_sent": sum(result.sent.values()),
            "events_sent_by_type": dg.MetadataValue.json(dict(sorted(result.sent.items()))),
            "rows_skipped": result.skipped,
            "rows_rejected": rejected.count,
            "rejected_sample": dg.MetadataValue.json(rejected.sample),
            "rows_undelivered": result.undelivered,
            "batches": result.batches,
            "requests": result.requests,
            "retries": result.retries,
            "bytes_sent": result.bytes_sent,
            "duration_seconds": round(time.monotonic() - started, 3),
            "destination": segment.resolved_destination(),
        }
        if rejected.count:
            metadata["rejected_rows_file"] = dg.MetadataValue.path(str(rejected.path))
        if result.undelivered:
            raise dg.Failure(
                f"sync {sync.name!r}: {result.undelivered} rows were not delivered ({result.undelivered_reason}); "
                f"{sum(result.sent.values())} events were. The next run sends the rest with the same messageIds.",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return _segment


def _state(context: dg.AssetExecutionContext) -> StateResource:
    return getattr(context.resources, STATE)


def _warehouse(context: dg.AssetExecutionContext) -> WarehouseResource:
    return getattr(context.resources, WAREHOUSE)


@contextlib.contextmanager
def _state_errors_as_failures() -> Iterator[None]:
    """A busy lock or unusable state fails the run with its message (and sends nothing)."""
    try:
        yield
    except StateError as exc:
        raise dg.Failure(str(exc)) from None
