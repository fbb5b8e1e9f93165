"""The YAML component: `type: segment_sync.SegmentSyncComponent` in any project's defs.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

import dagster as dg
from pydantic import BaseModel, Field, ValidationError

from segment_sync.alerts.settings import AlertSettings
from segment_sync.assets import AssetOptions
from segment_sync.factory import build_definitions
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource, default_state_dir
from segment_sync.spec import Engine, LogSettings, ModelSpec, ProjectSpec, SyncSpec


class SegmentSyncConfigError(ValueError):
    """A defs.yaml that cannot become syncs; the message names the file and the field."""


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return str(error["msg"]).removeprefix("Value error, ")
    return str(exc)


def _resource(cls: type[dg.ConfigurableResource]) -> dg.Resolver:
    """Resolve a resource straight from its YAML block (environment variables in it are resolved too)."""

    def resolve(context: dg.ResolutionContext, model: BaseModel) -> dg.ConfigurableResource:
        return cls(**context.resolve_value(model.model_dump(exclude_unset=True)))

    return dg.Resolver(resolve, model_field_type=cls)


class SegmentSyncComponent(dg.Component, dg.Model, dg.Resolvable):
    """Sync warehouse models to Segment: track, audience (Segment Entered/Exited), identify and group."""

    models: list[ModelSpec]
    syncs: list[SyncSpec]
    warehouse: Annotated[WarehouseResource, _resource(WarehouseResource)] = Field(default_factory=WarehouseResource)
    segment: Annotated[SegmentResource, _resource(SegmentResource)] = Field(default_factory=SegmentResource)
    state_dir: str | None = Field(
        default=None, description="Else SEGMENT_SYNC_STATE_DIR, else .segment_sync in the project."
    )
    group_name: str = "segment_sync"
    owners: list[str] = Field(default_factory=list, description="Owners of the assets: emails or team:name.")
    sync_log: LogSettings = Field(default_factory=LogSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    engine: Engine = Field(
        default="polars",
        description="Where syncs diff and keep state, unless a sync sets its own: polars (local disk, the default) "
        "or warehouse (tables in the warehouse's `state_schema`, for big models and runs on many machines).",
    )
    executor: Literal["in_process", "project_default"] = Field(
        default="project_default",
        description="How runs other than the sync jobs execute their steps (the UI's Materialize, dg launch --assets, "
        "automation): in_process runs them in the run's process, as the sync jobs always do, and becomes the code "
        "location's default executor; project_default leaves the project's own.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = context.path / "defs.yaml"
        try:
            project = ProjectSpec(models=self.models, syncs=self.syncs, engine=self.engine)
            return self._build(project, context, str(source))
        except (ValueError, ValidationError) as exc:
            raise SegmentSyncConfigError(f"{source}: attributes.{_first_error(exc)}") from None

    def _build(self, project: ProjectSpec, context: dg.ComponentLoadContext, source: str) -> dg.Definitions:
        return build_definitions(
            project,
            warehouse=self.warehouse,
            segment=self.segment,
            state=StateResource(state_dir=self.state_dir or default_state_dir(context.project_root)),
            options=AssetOptions(self.group_name, tuple(self.owners), self.warehouse.kind),
            logs=self.sync_log,
            alerts=self.alerts,
            source=source,
            in_process=self.executor == "in_process",
        )
