"""The jobs `dry_run_<sync>`, `test_row_<sync>` and `replay_<sync>`: manual runs that materialize nothing.

They are jobs of one op each, not runs of the sync's assets: a manual run leaves the snapshot, the diff and the
delivery's latest materialization (what the UI shows as the sync's last delivery, and its plots) as they were.
Each run is tagged `segment_sync/manual` and records an observation of `segment/<sync>`, so the asset's event
list shows it, marked, beside the real deliveries.
"""

from typing import Any

import dagster as dg

from segment_sync.assets.names import AssetOptions, ResourceKeys, segment_key, sync_pool
from segment_sync.assets.run_config import (
    MANUAL_TAG,
    REPLAY_CONFIG_SCHEMA,
    SYNC_TAG,
    TEST_ROW_CONFIG_SCHEMA,
    ReplayConfig,
    TestRowConfig,
)
from segment_sync.spec import Engine, LogSettings, ModelSpec, SyncSpec

_OBSERVED = ("manual_run", "guard", "key", "event", "preview", "dry_run_request_bodies", "sync_log", "api_calls")


def build_manual_jobs(
    sync: SyncSpec, model: ModelSpec, options: AssetOptions, logs: LogSettings, declared: str, engine: Engine
) -> list[dg.JobDefinition]:
    """The sync's dry-run, test-row and replay jobs, each launchable from the UI with its default config."""
    keys = options.resource_keys
    resources = {keys.state, keys.segment, keys.warehouse}

    def job(kind: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
        @dg.job(
            name=f"{kind}_{sync.name}",
            description=description,
            tags={MANUAL_TAG: kind, SYNC_TAG: sync.name},
            executor_def=dg.in_process_executor,
        )
        def _job() -> None:
            op()

        return _job

    @dg.op(
        name=f"dry_run__{sync.name}",
        required_resource_keys=resources,
        out=dg.Out(dg.Nothing),
        pool=sync_pool(sync.name),
    )
    def _dry_run(context: dg.OpExecutionContext) -> dg.Output:
        from segment_sync.assets.dry_run_step import dry_run

        return _report(context, sync, dry_run(context, keys, sync, model, logs, declared, engine))

    @dg.op(
        name=f"test_row__{sync.name}",
        required_resource_keys=resources,
        out=dg.Out(dg.Nothing),
        config_schema=TEST_ROW_CONFIG_SCHEMA,
        pool=sync_pool(sync.name),
    )
    def _test_row(context: dg.OpExecutionContext) -> dg.Output:
        config = TestRowConfig(**context.op_config)
        return _report(context, sync, _send(context, keys, sync, model, logs, engine, test_row=config.key))

    @dg.op(
        name=f"replay__{sync.name}",
        required_resource_keys=resources,
        out=dg.Out(dg.Nothing),
        config_schema=REPLAY_CONFIG_SCHEMA,
        pool=sync_pool(sync.name),
    )
    def _replay(context: dg.OpExecutionContext) -> dg.Output:
        config = ReplayConfig(**context.op_config)
        if not config.keys and not config.run:
            raise dg.Failure(f"sync {sync.name!r}: set `keys` or `run` in the op's config; nothing was sent")
        sent = _send(context, keys, sync, model, logs, engine, replay_keys=config.keys, replay_run=config.run)
        return _report(context, sync, sent)

    return [
        job(
            "dry_run",
            _dry_run,
            f"Dry run of sync `{sync.name}`: reads model `{sync.model}`, diffs it and builds the events as the sync "
            "would, writes the exact request bodies to the state folder, and sends nothing. The sync's state, "
            "snapshot and diff stay as they are. Launch it as it is.",
        ),
        job(
            "test_row",
            _test_row,
            f"Sends one row of model `{sync.model}` to Segment now, as sync `{sync.name}` would send it added, under "
            "a test messageId, and shows Segment's answer; the sync's state is untouched. `key` empty: the first "
            "row of the latest snapshot.",
        ),
        job(
            "replay",
            _replay,
            f"Sends again events sync `{sync.name}` delivered (by primary `keys` or by `run` id, within the sync "
            "log's retention) under new messageIds; the sync's state is untouched.",
        ),
    ]


def _send(
    context: dg.OpExecutionContext,
    keys: ResourceKeys,
    sync: SyncSpec,
    model: ModelSpec,
    logs: LogSettings,
    engine: Engine,
    *,
    test_row: str | None = None,
    replay_keys: list[str] | None = None,
    replay_run: str | None = None,
) -> dict[str, Any]:
    from segment_sync.assets.delivery_step import open_run_logs
    from segment_sync.assets.manual_send import send_outside_the_diff
    from segment_sync.storage.layout import SyncFolder

    root = keys.state_of(context).root()
    run_id = context.run.run_id
    log, calls = open_run_logs(SyncFolder.of(root, sync.name), sync, logs, run_id)

    def send(**where: Any) -> dict[str, Any]:
        return send_outside_the_diff(
            sync,
            model,
            root,
            keys.segment_of(context),
            log,
            calls,
            run_id,
            test_row=test_row,
            replay_keys=replay_keys or [],
            replay_run=replay_run,
            **where,
        )

    if engine != "warehouse":
        return send()
    from segment_sync.assets.warehouse_connection import warehouse_connection
    from segment_sync.warehouse_engine import sql_diff

    with warehouse_connection(context, keys, f"sync {sync.name!r}") as warehouse:  # type: ignore[arg-type]
        url, engine_, tables = warehouse.url, warehouse.engine, warehouse.tables
        return send(
            snapshot_row=lambda key: sql_diff.snapshot_row(url, engine_, tables, model, key),
            lock=warehouse.state(sync.name, run_id).lock(),
        )


def _report(context: dg.OpExecutionContext, sync: SyncSpec, metadata: dict[str, Any]) -> dg.Output:
    """The run's metadata on its output, and an observation of the delivery asset that marks it as manual."""
    observed = {k: metadata[k] for k in _OBSERVED if k in metadata}
    context.log_event(dg.AssetObservation(asset_key=segment_key(sync.name), metadata=observed))
    return dg.Output(None, metadata=metadata)
