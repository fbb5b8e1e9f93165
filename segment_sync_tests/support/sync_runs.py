"""Sync projects built as the component builds them, and run in process with their results as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from segment_sync.alerts.settings import AlertSettings
from segment_sync.factory import build_definitions
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.spec import LogSettings, ProjectSpec

WRITE_KEY = "wk_TEST_0123456789abcdefghijklmnop"
# A track sync of model "m" (table src: id, uid, v) that many tests share.
TRACK = {
    "name": "t",
    "model": "m",
    "type": "track",
    "user_id": "uid",
    "fields": ["v"],
    "events": {"added": "Added", "changed": "Changed", "removed": "Removed"},
    "send_initial": True,
}


@dataclass
class SyncRun:
    """The result of one sync job run, with each asset's metadata as plain values."""

    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success

    def metadata(self, *key: str) -> dict[str, Any]:
        """Metadata of the latest materialization of an asset in this run."""
        events = [e for e in self.result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(list(key))]
        assert events, f"{'/'.join(key)} was not materialized; failures: {self.failure_messages()}"
        return {k: v.value for k, v in events[-1].materialization.metadata.items()}

    def materialized(self) -> set[str]:
        """Keys of the assets materialized by this run."""
        return {e.asset_key.to_user_string() for e in self.result.get_asset_materialization_events()}

    def error_text(self) -> str:
        """Every message and error (with causes) the run's events carry."""
        parts = []
        for event in self.result.all_events:
            parts.append(event.message or "")
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                parts.append(error.to_string())
        return "\n".join(parts)

    def failure_messages(self) -> list[str]:
        """Error messages of failed steps."""
        out = []
        for event in self.result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                out.append(f"{event.step_key}: {error.message if error else event.message}")
        return out


def make_definitions(
    project: dict[str, Any],
    *,
    segment: dict[str, Any] | None = None,
    logs: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
    warehouse: dict[str, Any] | None = None,
) -> dg.Definitions:
    """Definitions for a project given as the YAML attributes would be, with fast retries for tests."""
    settings = {"max_attempts": 3, "max_retry_seconds": 5.0, "timeout_seconds": 5.0, **(segment or {})}
    return build_definitions(
        ProjectSpec.model_validate(project),
        warehouse=WarehouseResource(**(warehouse or {})),
        segment=SegmentResource(**settings),
        state=StateResource(),
        logs=LogSettings(**(logs or {})),
        alerts=AlertSettings(**(alerts or {})),
    )


_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def run_sync(
    definitions: dg.Definitions,
    sync: str,
    instance: dg.DagsterInstance,
    *,
    approve: bool = False,
    diff: dict[str, Any] | None = None,
) -> SyncRun:
    """Run one sync's job in process (approving a large change when asked; `diff` is the diff step's config)."""
    job = definitions.resolve_job_def(f"sync_{sync}")
    ops = {f"diff__{sync}": {"config": {"approve_large_change": approve, **(diff or {})}}}
    config = {**_QUIET, "ops": ops}
    return SyncRun(job.execute_in_process(instance=instance, raise_on_error=False, run_config=config))


@dataclass
class ManualRun:
    """The result of one run of a sync's dry-run, test-row or replay job, with its report as plain values."""

    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success

    def metadata(self) -> dict[str, Any]:
        """The metadata of the job's op: its output's, or its failure's."""
        for event in self.result.all_events:
            if event.is_successful_output:
                return {k: v.value for k, v in event.step_output_data.metadata.items()}
            if event.is_step_failure and event.step_failure_data.user_failure_data:
                return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}
        raise AssertionError(f"no output; failures: {self.failure_messages()}")

    def observations(self) -> list[dict[str, Any]]:
        """The metadata of the observations the run recorded."""
        events = [e for e in self.result.all_events if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
        return [{k: v.value for k, v in e.asset_observation_data.asset_observation.metadata.items()} for e in events]

    def failure_messages(self) -> list[str]:
        return SyncRun(self.result).failure_messages()


def run_manual(
    definitions: dg.Definitions,
    job: str,
    instance: dg.DagsterInstance,
    config: dict[str, Any] | None = None,
) -> ManualRun:
    """Run a manual job (`dry_run_t`, `test_row_t`, `replay_t`) in process; `config` is its op's config."""
    job_def = definitions.resolve_job_def(job)
    [op] = job_def.graph.node_names()
    run_config = {**_QUIET, "ops": {op: {"config": config}}} if config is not None else _QUIET
    return ManualRun(job_def.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config))
