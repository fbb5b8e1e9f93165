"""A project's alert sensors evaluated against real sync runs, as the daemon would call them, and what they logged."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from segment_sync_tests.support.sync_runs import TRACK, SyncRun, make_definitions, run_sync

MISSING_COLUMN = {**TRACK, "fields": ["v", "plan"]}  # a track sync whose diff fails: model m has no column plan


def one_sync_project(sync: dict) -> dict:
    """A project of model m (table src) and one sync."""
    return {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [sync]}


def alert_file(state_dir: Path, sync: str = "t") -> dict:
    """A sync's alert status as saved."""
    return json.loads((state_dir / "syncs" / sync / "alerts.json").read_text())


class Records(logging.Handler):
    """Every record logged through a logger it is added to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.DEBUG) -> str:
        """The messages at `level` or above, a line each."""
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@dataclass
class Alerts:
    """A sync's definitions and its alert sensors, evaluated against real runs."""

    project: dict
    instance: dg.DagsterInstance
    threshold: dict[str, str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the rest of the YAML's `alerts:`
    cursors: dict[str, str | None] = field(default_factory=dict, init=False)  # each run sensor's, between ticks

    def __post_init__(self) -> None:
        alerts = {"rejected_rows_threshold": self.threshold or {}, **self.settings}
        self.definitions = make_definitions(self.project, alerts=alerts)
        self.sensors = [s for s in self.definitions.sensors if "_alerts_" in s.name]
        self.tick()  # the daemon's first tick: the run sensors start after the runs already finished

    def tick(self) -> None:
        """One daemon tick of the failure and success sensors: each finds the runs that finished since its last."""
        repository = self.definitions.get_repository_def()
        for sensor in self.sensors[:2]:
            cursor = self.cursors.get(sensor.name)
            context = dg.build_sensor_context(instance=self.instance, repository_def=repository, cursor=cursor)
            result = sensor.evaluate_tick(context)
            assert [r.error for r in result.dagster_run_reactions if r.error] == []
            self.cursors[sensor.name] = result.cursor

    def run_users_job(self) -> dg.ExecuteInProcessResult:
        """Run a job of the user's own over the groups of the three stages, defined beside the syncs' jobs."""
        stages = [f"segment_sync_{stage}" for stage in ("snapshot", "diff", "segment")]
        nightly = dg.define_asset_job("nightly", selection=dg.AssetSelection.groups(*stages))
        job = dg.Definitions.merge(self.definitions, dg.Definitions(jobs=[nightly])).resolve_job_def("nightly")
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def materialize(self, *assets: str) -> SyncRun:
        """Materialize assets in process as a selection of the implicit asset job (not a sync's job)."""
        job = self.definitions.resolve_implicit_global_asset_job_def()
        selection = {dg.AssetKey.from_user_string(a) for a in assets}
        return SyncRun(
            job.get_subset(asset_selection=selection).execute_in_process(instance=self.instance, raise_on_error=False)
        )

    def run(self, instance: dg.DagsterInstance | None = None, sync: str = "t") -> SyncRun:
        """Run a sync's job."""
        return run_sync(self.definitions, sync, instance or self.instance)

    def evaluate(self, run: SyncRun, instance: dg.DagsterInstance | None = None) -> Records:
        """Call the sensor that sees this run, with the context dagster's docs build; return what it logged."""
        result = run.result
        failure, success, _ = self.sensors
        sensor = success if run.success else failure
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance or self.instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event() if run.success else result.get_run_failure_event(),
        )
        if not run.success:
            context = context.for_run_failure()
        logs = Records()
        context.log.addHandler(logs)
        sensor(context)
        return logs

    def run_and_evaluate(self, instance: dg.DagsterInstance | None = None, sync: str = "t") -> tuple[SyncRun, Records]:
        """Run a sync and evaluate the sensor that sees the run."""
        run = self.run(instance, sync)
        return run, self.evaluate(run, instance)

    def retry(self) -> tuple[dg.SkipReason, Records]:
        """One evaluation of the retry sensor."""
        context = dg.build_sensor_context(instance=self.instance)
        logs = Records()
        context.log.addHandler(logs)
        return self.sensors[2](context), logs
