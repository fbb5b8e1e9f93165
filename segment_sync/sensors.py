"""Alert sensors: each run judged per sync and told to its channels, and a retry of what a channel did not take."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import BaseModel

from segment_sync.alerts.channels import posters
from segment_sync.alerts.messages import RunOutcome
from segment_sync.alerts.settings import AlertSettings
from segment_sync.alerts.status import (
    Poster,
    alert_state,
    forget_channels,
    observe,
    pending_channels,
    post_pending,
)
from segment_sync.alerts.thresholds import parse_thresholds
from segment_sync.assets import diff_key, segment_key, snapshot_key
from segment_sync.resources import StateResource
from segment_sync.spec import SyncSpec
from segment_sync.storage.layout import SyncFolder

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

DEFAULT_UI_URL = "http://localhost:3000"
RETRY_INTERVAL_SECONDS = 60
_EVENTS = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
}


def build_alert_sensors(
    syncs: Sequence[SyncSpec],
    state: StateResource,
    settings: AlertSettings | None = None,
    *,
    prefix: str = "segment_sync",
) -> list[dg.SensorDefinition]:
    """Sensors, running by default, that alert each sync's channels when it fails, recovers or rejects too many rows.

    They watch every run of the code location, whatever its job (a sync's job, the UI's Materialize, `dg launch
    --assets`, a user's job, declarative automation), and judge each sync whose assets the run planned by its own
    steps (see `_verdict`). The channels (Slack, PagerDuty, email, webhook) and the rejected-rows thresholds come
    from `settings`; run links start with its `ui_url`, else DAGSTER_UI_URL, else http://localhost:3000. Sensor
    names start with `prefix`, which also names the syncs' PagerDuty incidents.
    """
    settings = settings or AlertSettings()
    names = [s.name for s in syncs]
    thresholds = parse_thresholds(names, settings.rejected_rows_threshold)
    channels = settings.channels(names)
    assets = {key for sync in syncs for key in _assets(sync)}

    def set_up(sync: str, log: logging.Logger, noted: set[str], only: set[str] | None = None) -> dict[str, Poster]:
        chosen: Mapping[str, BaseModel] = channels[sync]
        if only is not None:
            chosen = {name: c for name, c in chosen.items() if name in only}
        return posters(chosen, os.environ, group=prefix, log=log, noted=noted)

    def on_run(context: dg.RunStatusSensorContext, run_failed: bool) -> None:
        run = _FinishedRun.read(context.instance, context.dagster_run, assets)
        verdicts = [(sync, _verdict(run, sync, run_failed)) for sync in syncs] if run else []
        noted: set[str] = set()
        for sync, succeeded in verdicts:
            if succeeded is None or not (ready := set_up(sync.name, context.log, noted)):
                continue
            outcome = _outcome(context, run, sync, succeeded, settings.ui_url)
            with alert_state(_folder(state, sync.name), context.log) as status:
                if observe(status, outcome, thresholds[sync.name], ready):
                    post_pending(status, ready, context.log)
                else:
                    context.log.info(
                        "Run %s of sync %r is older than one already seen; no alert", outcome.run_id, outcome.sync
                    )

    @dg.run_failure_sensor(
        name=f"{prefix}_alerts_on_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts each sync's channels when it starts failing (once, not at every failed run).",
    )
    def alerts_on_failure(context: dg.RunFailureSensorContext) -> None:
        on_run(context, run_failed=True)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=f"{prefix}_alerts_on_success",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts each sync's channels when it recovers, or when its rejected rows cross its threshold.",
    )
    def alerts_on_success(context: dg.RunStatusSensorContext) -> None:
        on_run(context, run_failed=False)

    @dg.sensor(
        name=f"{prefix}_alerts_retry",
        minimum_interval_seconds=RETRY_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends again, to each channel, the sync alerts it did not take when they happened.",
    )
    def alerts_retry(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        waiting = {s.name: pending for s in syncs if (pending := pending_channels(_folder(state, s.name)))}
        noted: set[str] = set()
        tried = []
        for sync, pending in waiting.items():
            ready = set_up(sync, context.log, noted, only=pending)
            with alert_state(_folder(state, sync), context.log) as status:
                forget_channels(status, channels[sync], context.log, sync)
                if ready:
                    post_pending(status, ready, context.log)
                    tried.append(sync)
        if tried:
            return dg.SkipReason(f"Tried again the alerts of {', '.join(tried)}")
        if waiting:
            return dg.SkipReason(f"The alerts of {', '.join(waiting)} wait for channels that are off")
        return dg.SkipReason("No alert is waiting")

    return [alerts_on_failure, alerts_on_success, alerts_retry]


@dataclass(frozen=True)
class _FinishedRun:
    """A finished run as the alerts read it: the assets it planned, how their steps ended, what they materialized."""

    dagster_run: dg.DagsterRun
    steps: dict[dg.AssetKey, str]  # each planned asset -> the key of the step that materializes it
    succeeded: set[str]  # step keys
    failures: list[dg.DagsterEvent]  # step failures
    materialized: dict[dg.AssetKey, dict[str, Any]]  # metadata of each asset materialized
    finished_at: float

    @classmethod
    def read(cls, instance: dg.DagsterInstance, run: dg.DagsterRun, assets: set[dg.AssetKey]) -> _FinishedRun | None:
        """The run, from its execution plan and event log; None when it planned none of `assets`."""
        if run.execution_plan_snapshot_id is None:
            return None
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        chosen = set(plan.step_keys_to_execute or (step.key for step in plan.steps))
        steps = {
            output.properties.asset_key: step.key
            for step in plan.steps
            if step.key in chosen
            for output in step.outputs
            if output.properties is not None and output.properties.asset_key in assets
        }
        if not steps:
            return None
        succeeded, failures, materialized = set(), [], {}
        for record in instance.get_records_for_run(run.run_id, of_type=_EVENTS).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                succeeded.add(event.step_key)
            elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
                failures.append(event)
            elif (materialization := entry.asset_materialization) is not None:
                materialized[materialization.asset_key] = {k: v.value for k, v in materialization.metadata.items()}
        record = instance.get_run_record_by_id(run.run_id)
        finished_at = record.end_time if record and record.end_time else time.time()
        return cls(run, steps, succeeded, failures, materialized, finished_at)


def _assets(sync: SyncSpec) -> tuple[dg.AssetKey, ...]:
    return snapshot_key(sync.model), diff_key(sync.name), segment_key(sync.name)


def _sync_steps(run: _FinishedRun, sync: SyncSpec) -> list[str]:
    return [run.steps[key] for key in _assets(sync) if key in run.steps]


def _verdict(run: _FinishedRun, sync: SyncSpec, run_failed: bool) -> bool | None:
    """Whether the run says the sync succeeded (True) or failed (False); None when it says nothing of the sync.

    A sync failed when one of its planned steps failed (a failed snapshot fails every sync of its model), or when
    the run failed before they all succeeded. It succeeded when they all succeeded and include its delivery, even
    if another sync's step failed the run. A run that planned none of its assets (as the dry-run, test-row and
    replay jobs do) or that planned only its snapshot or diff and they succeeded says nothing.
    """
    steps = _sync_steps(run, sync)
    if not steps:
        return None
    if any(event.step_key in steps for event in run.failures):
        return False
    if all(step in run.succeeded for step in steps):
        return True if segment_key(sync.name) in run.steps else None
    return False if run_failed else None


def _outcome(
    context: dg.RunStatusSensorContext, run: _FinishedRun, sync: SyncSpec, succeeded: bool, ui_url: str | None
) -> RunOutcome:
    steps = _sync_steps(run, sync)
    failures = [] if succeeded else [e for e in run.failures if e.step_key in steps] or run.failures
    delivery_step = run.steps.get(segment_key(sync.name))
    run_id = run.dagster_run.run_id
    base = (ui_url or dg.EnvVar("DAGSTER_UI_URL").get_value() or DEFAULT_UI_URL).rstrip("/")
    return RunOutcome(
        sync=sync.name,
        model=sync.model,
        run_id=run_id,
        run_url=f"{base}/runs/{run_id}",
        finished_at=run.finished_at,
        succeeded=succeeded,
        error=None if succeeded else _error(failures, context.dagster_event),
        diff=run.materialized.get(diff_key(sync.name)),
        delivery=run.materialized.get(segment_key(sync.name)) or _failure_metadata(failures, delivery_step),
    )


def _failure_metadata(failures: list[dg.DagsterEvent], step: str | None) -> dict[str, Any] | None:
    """What a failed delivery step recorded in its dg.Failure (sent, rejected and undelivered rows)."""
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


def _folder(state: StateResource, sync: str) -> Path:
    return SyncFolder.of(state.root(), sync).path
