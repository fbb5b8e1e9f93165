"""The asset factory: snapshot/<model>, diff/<sync> and segment/<sync> for each model and sync."""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import polars as pl
from pydantic import Field

from segment_sync.controls import ControlError, replay_payloads, test_row_event
from segment_sync.delivery import Outbox, Transport, deliver
from segment_sync.diff import DIFF_SCHEMA, compute_diff, count_kinds, current_contents, resync_diff
from segment_sync.encoding import row_contents
from segment_sync.events import RowRejected
from segment_sync.guards import change_size_problems, column_kinds, kind_changes
from segment_sync.metadata import calls_table, events_preview, markdown_table, schema_metadata
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.snapshot import drop_duplicate_keys, key_problems, missing_columns, split_null_keys
from segment_sync.spec import LogSettings, ModelSpec, SyncSpec
from segment_sync.state import StateError, SyncState, atomic_write, write_parquet_atomic
from segment_sync.sync_log import CallLog, RunLog, prune_logs
from segment_sync.sync_run import SyncResult, deliver_diff
from segment_sync.warehouse import WarehouseError, append_to_table, read_model

WAREHOUSE, SEGMENT, STATE = "segment_sync_warehouse", "segment_sync_segment", "segment_sync_state"
PK_CHECK = "primary_key_unique"
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


def sync_pool(sync: str) -> str:
    """The Dagster concurrency pool of a sync's diff and delivery (limit it to 1)."""
    return f"segment_sync/{sync}"


@dataclass(frozen=True)
class AssetOptions:
    """How the assets of one component present themselves in the UI, and what triggers them."""

    group_name: str = "segment_sync"
    owners: tuple[str, ...] = ()
    warehouse_kind: str | None = None


class SyncFiles:
    """Where a sync keeps its latest diff, the diff's basis, its rejected rows and its outbox."""

    def __init__(self, root: Path, sync: str):
        self.folder = root / "syncs" / sync
        self.diff = self.folder / "diff.parquet"
        self.diff_info = self.folder / "diff.json"
        self.outbox = root / "outbox" / f"{sync}.jsonl"

    def dry_run_outbox(self, run_id: str) -> Path:
        """Where a dry run writes the request bodies it would have sent."""
        return self.folder / "dry_runs" / f"{run_id}.jsonl"


def build_snapshot_asset(
    model: ModelSpec, options: AssetOptions, upstream: list[dg.AssetKey], automation: dg.AutomationCondition | None
) -> dg.AssetsDefinition:
    """The asset that reads a model into a Parquet snapshot, with its blocking primary key check."""
    key = snapshot_key(model.name)
    check = dg.AssetCheckSpec(
        PK_CHECK, asset=key, blocking=True, description=f"No two rows share a {model.key_columns} value."
    )

    @dg.asset(
        key=key,
        deps=([table_key(model.table)] if model.table else []) + upstream,
        group_name=options.group_name,
        owners=list(options.owners),
        kinds={"polars", options.warehouse_kind} if options.warehouse_kind else {"polars"},
        automation_condition=automation,
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
        frame, dropped, dropped_keys = drop_duplicate_keys(frame, model)
        path = snapshot_path(root, model.name)
        write_parquet_atomic(frame, path)
        problems = key_problems(frame, model.key_columns)
        policy = {
            "duplicate_rows_dropped": dropped,
            "duplicate_rows_dropped_keys": dg.MetadataValue.json(dropped_keys),
            "null_key_rows": problems.null_rows,
        }
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                **schema_metadata(frame),
                **policy,
                "preview": dg.MetadataValue.md(markdown_table(frame.head(10))),
                "path": dg.MetadataValue.path(str(path)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=PK_CHECK,
                    passed=problems.duplicate_keys == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=None
                    if problems.duplicate_keys == 0
                    else f"{problems.duplicate_keys} primary keys appear more than once: nothing is sent until "
                    "the model's key is unique (or set on_duplicate_key to keep_first/keep_last with order_by).",
                    metadata={
                        "duplicate_keys": problems.duplicate_keys,
                        "duplicate_key_samples": dg.MetadataValue.json(problems.duplicate_samples),
                        **policy,
                    },
                )
            ],
        )

    return _snapshot


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
        root = _state(context).root()
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
        with _state_errors_as_failures():
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


class DeliveryConfig(dg.Config):
    """Run configuration of a sync's delivery."""

    dry_run: bool = Field(
        default=False, description="Build the events and write the exact request bodies to the outbox; send nothing."
    )
    test_row: str | None = Field(
        default=None, description="Only send the event of the row with this primary key (state is not changed)."
    )
    replay_keys: list[str] = Field(
        default_factory=list, description="Only re-send the delivered events of these primary keys."
    )
    replay_run: str | None = Field(default=None, description="Only re-send the events a past run delivered.")


def build_segment_asset(
    sync: SyncSpec,
    model: ModelSpec,
    options: AssetOptions,
    logs: LogSettings,
    automation: dg.AutomationCondition | None,
) -> dg.AssetsDefinition:
    """The asset that turns a sync's diff into events and delivers them."""

    @dg.asset(
        key=segment_key(sync.name),
        deps=[diff_key(sync.name)],
        group_name=options.group_name,
        owners=list(options.owners),
        kinds={"segment"},
        automation_condition=automation,
        pool=sync_pool(sync.name),
        description=f"Events of sync `{sync.name}` ({sync.type}) delivered to Segment.",
        required_resource_keys={STATE, SEGMENT, WAREHOUSE},
    )
    def _segment(context: dg.AssetExecutionContext, config: DeliveryConfig) -> dg.MaterializeResult:
        started = time.monotonic()
        root = _state(context).root()
        segment: SegmentResource = getattr(context.resources, SEGMENT)
        files = SyncFiles(root, sync.name)
        prune_logs(files.folder, logs.retention_days)
        run_id = context.run.run_id
        log, calls = RunLog(files.folder, sync.name, run_id), CallLog(files.folder, run_id)
        if config.test_row is not None or config.replay_keys or config.replay_run:
            return _send_outside_the_diff(sync, model, config, root, segment, log, calls, run_id)
        with _state_errors_as_failures():
            store = SyncState(files.folder, sync.name)
            with store.lock():
                info = orjson.loads(files.diff_info.read_bytes()) if files.diff_info.exists() else None
                if info is None or info["generation"] != store.meta.generation:
                    raise dg.Failure(
                        f"sync {sync.name!r}: the diff is missing or older than the sync's state; run the whole "
                        f"sync job (diff/{sync.name} then segment/{sync.name}), nothing was sent"
                    )
                if config.dry_run:
                    store = store.dry_run_copy()
                    transport = Outbox(files.dry_run_outbox(run_id))
                else:
                    store.begin_run()
                    transport = segment.transport(files.outbox)
                try:
                    for content in info["null_key_rows"]:
                        reason = f"the primary key of model {sync.model!r} is null, so the row cannot be tracked"
                        log.add(None, "added", "rejected", reason=f"{reason}: {content[:200]}")
                    result = deliver_diff(
                        sync,
                        pl.read_parquet(files.diff),
                        store,
                        transport,
                        log,
                        initial=info["initial"],
                        policy=segment.retry_policy(),
                        max_batch_bytes=segment.max_batch_bytes,
                        pacer=segment.pacer(),
                        calls=calls,
                    )
                finally:
                    log.close()
                    calls.close()
                if not config.dry_run:
                    pending = log.rejected_by_kind + result.undelivered_by_kind
                    store.commit(column_kinds=info["column_kinds"], pending=dict(pending))
        if logs.warehouse_table and not config.dry_run:
            _write_log_to_warehouse(context, root, logs.warehouse_table, log)
        metadata = _delivery_metadata(result, log, calls, started, segment, config.dry_run, transport)
        if result.undelivered:
            raise dg.Failure(
                f"sync {sync.name!r}: {result.undelivered} rows were not delivered ({result.undelivered_reason}); "
                f"{sum(result.sent.values())} events were. The next run sends the rest with the same messageIds.",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return _segment


def _send_outside_the_diff(
    sync: SyncSpec,
    model: ModelSpec,
    config: DeliveryConfig,
    root: Path,
    segment: SegmentResource,
    log: RunLog,
    calls: CallLog,
    run_id: str,
) -> dg.MaterializeResult:
    """A test row or a replay: sent now, logged, and never recorded in the state."""
    files = SyncFiles(root, sync.name)
    try:
        if config.test_row is not None:
            snapshot = pl.read_parquet(snapshot_path(root, model.name))
            payloads, missing = [test_row_event(sync, model, snapshot, config.test_row, run_id).payload], []
        else:
            payloads, missing = replay_payloads(
                files.folder, run_id, from_run=config.replay_run, keys=config.replay_keys
            )
    except (ControlError, RowRejected, FileNotFoundError) as exc:
        raise dg.Failure(f"sync {sync.name!r}: {exc}; nothing was sent") from None
    with _state_errors_as_failures(), SyncState(files.folder, sync.name).lock():
        try:
            report = deliver(
                payloads,
                segment.transport(files.outbox),
                lambda _: None,
                policy=segment.retry_policy(),
                pacer=segment.pacer(),
                on_call=calls,
            )
        finally:
            calls.close()
    failed = dict(report.rejected) | dict.fromkeys(report.undelivered, report.undelivered_reason)
    status = "test_row" if config.test_row is not None else "replayed"
    for i, payload in enumerate(payloads):
        event = orjson.loads(payload)
        name, message_id = event.get("event") or event["type"], event["messageId"]
        log.add(
            None,
            "added",
            "rejected" if i in failed else status,
            event=name,
            message_id=message_id,
            reason=failed.get(i),
        )
    log.close()
    metadata: dict[str, Any] = {
        "events_sent": report.acknowledged,
        "events_failed": len(failed),
        "api_calls": dg.MetadataValue.md(calls_table(calls.summaries)),
        "segment_response": dg.MetadataValue.json(calls.summaries[-1] if calls.summaries else {}),
        "sync_log": dg.MetadataValue.path(str(log.path)),
    }
    if config.test_row is not None:
        metadata["event"] = dg.MetadataValue.json(orjson.loads(payloads[0]))
    else:
        metadata["message_ids_not_found"] = dg.MetadataValue.json(missing[:20])
    if failed:
        raise dg.Failure(
            f"sync {sync.name!r}: {len(failed)} events were not accepted: {next(iter(failed.values()))}",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _delivery_metadata(
    result: SyncResult,
    log: RunLog,
    calls: CallLog,
    started: float,
    segment: SegmentResource,
    dry_run: bool,
    transport: Transport,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "events_sent": sum(result.sent.values()),
        "events_sent_by_type": dg.MetadataValue.json(dict(sorted(result.sent.items()))),
        "rows_skipped": result.skipped,
        "rows_rejected": log.rejected,
        "rejected_sample": dg.MetadataValue.json(log.rejected_sample),
        "rows_undelivered": result.undelivered,
        "batches": result.batches,
        "requests": result.requests,
        "retries": result.retries,
        "bytes_sent": result.bytes_sent,
        "duration_seconds": round(time.monotonic() - started, 3),
        "destination": "dry run (outbox)" if dry_run else segment.resolved_destination(),
        "api_calls": dg.MetadataValue.md(calls_table(calls.summaries)),
        "sync_log": dg.MetadataValue.path(str(log.path)),
    }
    if calls.summaries:
        metadata["api_calls_file"] = dg.MetadataValue.path(str(calls.path))
    if log.rejected:
        metadata["rejected_rows_file"] = dg.MetadataValue.path(str(log.rejected_path))
    if dry_run and isinstance(transport, Outbox):
        metadata["dry_run_request_bodies"] = dg.MetadataValue.path(str(transport.path))
        metadata["preview"] = dg.MetadataValue.md(events_preview(transport.path))
    return metadata


def _write_log_to_warehouse(context: dg.AssetExecutionContext, root: Path, table: str, log: RunLog) -> None:
    try:
        append_to_table(_warehouse(context).url(root), table, pl.read_parquet(log.path))
    except WarehouseError as exc:
        context.log.warning(f"The sync log stays in {log.path}: {exc}")


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
