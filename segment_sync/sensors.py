"""Slack alerts as sensors: on each sync run that fails or succeeds, and a retry of alerts Slack did not take."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from segment_sync.alerts import (
    RejectedThreshold,
    RunOutcome,
    alert_state,
    has_pending,
    observe,
    parse_thresholds,
    post_pending,
)
from segment_sync.assets import SyncFiles, diff_key, segment_key
from segment_sync.resources import StateResource
from segment_sync.spec import SyncSpec

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

    from segment_sync.slack import SlackPoster

DEFAULT_UI_URL = "http://localhost:3000"
RETRY_INTERVAL_SECONDS = 60
MANUAL_RUN_OPTIONS = ("dry_run", "test_row", "replay_keys", "replay_run")  # of the delivery's run configuration


def build_alert_sensors(
    syncs: Sequence[SyncSpec],
    jobs: Sequence[dg.UnresolvedAssetJobDefinition],
    state: StateResource,
    *,
    rejected_rows_threshold: Mapping[str, str] | None = None,
    ui_url: str | None = None,
    prefix: str = "segment_sync",
) -> list[dg.SensorDefinition]:
    """Sensors, running by default, that tell Slack when a sync starts failing, recovers, or rejects too many rows.

    `rejected_rows_threshold` maps a sync to "25" (more than 25 rejected rows) or "5%" (more than 5% of the rows
    a run tried to send); a sync left out warns on any rejected row. Run links start with `ui_url`, else
    DAGSTER_UI_URL, else http://localhost:3000. Sensor names start with `prefix`.
    """
    by_job = {f"sync_{s.name}": s for s in syncs}
    thresholds = parse_thresholds([s.name for s in syncs], rejected_rows_threshold)

    def on_run(context: dg.RunStatusSensorContext, succeeded: bool) -> None:
        sync = by_job.get(context.dagster_run.job_name)
        if sync is None or _is_manual_run(context.dagster_run, sync.name):
            return
        slack = slack_from_env(context.log)
        if slack is not None:
            outcome = _outcome(context, sync, succeeded, ui_url)
            _alert(context, outcome, slack, _folder(state, sync.name), thresholds[sync.name])

    @dg.run_failure_sensor(
        name=f"{prefix}_slack_on_failure",
        monitored_jobs=list(jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts to Slack when a sync starts failing (once, not at every failed run).",
    )
    def slack_on_failure(context: dg.RunFailureSensorContext) -> None:
        on_run(context, succeeded=False)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=f"{prefix}_slack_on_success",
        monitored_jobs=list(jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts to Slack when a failing sync recovers, or a sync's rejected rows cross its threshold.",
    )
    def slack_on_success(context: dg.RunStatusSensorContext) -> None:
        on_run(context, succeeded=True)

    @dg.sensor(
        name=f"{prefix}_slack_retry",
        minimum_interval_seconds=RETRY_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts the sync alerts that Slack did not take when they happened.",
    )
    def slack_retry(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        slack = slack_from_env(context.log)
        if slack is None:
            return dg.SkipReason("Slack alerts are off")
        waiting = [s.name for s in syncs if has_pending(_folder(state, s.name))]
        for sync in waiting:
            with alert_state(_folder(state, sync), context.log) as status:
                post_pending(status, slack, sync, context.log)
        return dg.SkipReason(f"Tried again the alerts of {', '.join(waiting)}" if waiting else "No alert is waiting")

    return [slack_on_failure, slack_on_success, slack_retry]


def slack_from_env(log: logging.Logger) -> SlackPoster | None:
    """A poster from SLACK_BOT_TOKEN, SLACK_CHANNEL and SLACK_API_URL, read now; None (and a note) when unset."""
    token, channel = dg.EnvVar("SLACK_BOT_TOKEN").get_value(), dg.EnvVar("SLACK_CHANNEL").get_value()
    if not token or not channel:
        missing = " and ".join(n for n, v in (("SLACK_BOT_TOKEN", token), ("SLACK_CHANNEL", channel)) if not v)
        log.info("Slack alerts are off: set %s to have sync failures posted to Slack", missing)
        return None
    from segment_sync.slack import SlackPoster  # slack-sdk loads only when Slack is set up

    return SlackPoster(token, channel, base_url=dg.EnvVar("SLACK_API_URL").get_value() or None)


def _alert(
    context: dg.RunStatusSensorContext,
    outcome: RunOutcome,
    slack: SlackPoster,
    folder: Path,
    threshold: RejectedThreshold,
) -> None:
    with alert_state(folder, context.log) as status:
        if observe(status, outcome, threshold):
            post_pending(status, slack, outcome.sync, context.log)
        else:
            context.log.info("Run %s of sync %r is older than one already seen; no alert", outcome.run_id, outcome.sync)


def _outcome(context: dg.RunStatusSensorContext, sync: SyncSpec, succeeded: bool, ui_url: str | None) -> RunOutcome:
    run, instance = context.dagster_run, context.instance
    materialized = _materializations(instance, run.run_id)
    failures = [] if succeeded else _step_failures(instance, run.run_id)
    delivery = materialized.get(segment_key(sync.name)) or _failure_metadata(failures, sync.name)
    record = instance.get_run_record_by_id(run.run_id)
    base = (ui_url or dg.EnvVar("DAGSTER_UI_URL").get_value() or DEFAULT_UI_URL).rstrip("/")
    return RunOutcome(
        sync=sync.name,
        model=sync.model,
        run_id=run.run_id,
        run_url=f"{base}/runs/{run.run_id}",
        finished_at=record.end_time if record and record.end_time else time.time(),
        succeeded=succeeded,
        error=None if succeeded else _error(failures, context.dagster_event),
        diff=materialized.get(diff_key(sync.name)),
        delivery=delivery,
    )


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetKey, dict[str, Any]]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    out = {}
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None:
            out[materialization.asset_key] = {k: v.value for k, v in materialization.metadata.items()}
    return out


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterEvent]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def _failure_metadata(failures: list[dg.DagsterEvent], sync: str) -> dict[str, Any] | None:
    """What a failed delivery recorded in its dg.Failure (sent, rejected and undelivered rows)."""
    step = segment_key(sync).to_python_identifier()
    for event in failures:
        data = event.step_failure_data.user_failure_data
        if event.step_key == step and data is not None and data.metadata:
            return {k: v.value for k, v in data.metadata.items()}
    return None


def _error(failures: list[dg.DagsterEvent], run_failure: dg.DagsterEvent) -> str:
    if failures:
        data = failures[0].step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        return f"{failures[0].step_key}: {described or _innermost(data.error)}"
    error = getattr(run_failure.event_specific_data, "error", None)
    return _innermost(error) if error is not None else run_failure.message or "the run failed"


def _innermost(error: SerializableErrorInfo | None) -> str:
    """The root cause of an error, as "Class: message" (just the message for a dg.Failure)."""
    if error is None:
        return "no error was recorded"
    while error.cause is not None:
        error = error.cause
    head, _, rest = error.message.partition(": ")
    message = (rest if rest and head.rsplit(".", 1)[-1] == error.cls_name else error.message).strip()
    return message if error.cls_name == "Failure" else f"{error.cls_name}: {message}"


def _is_manual_run(run: dg.DagsterRun, sync: str) -> bool:
    """A dry run, test row or replay is not a regular run of the sync: it says nothing about the sync's health."""
    ops = run.run_config.get("ops") or {}
    config = (ops.get(segment_key(sync).to_python_identifier()) or {}).get("config") or {}
    return any(config.get(option) for option in MANUAL_RUN_OPTIONS)


def _folder(state: StateResource, sync: str) -> Path:
    return SyncFiles(state.root(), sync).folder
