"""The YAML component: `type: segment_sync.SegmentSyncComponent` in any project's defs.yaml."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segment_sync.assets import AssetOptions
from segment_sync.factory import build_definitions
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource, default_state_dir
from segment_sync.segment_api.batching import MAX_BATCH_BYTES, MIN_BATCH_BYTES
from segment_sync.segment_api.client import DEFAULT_ENDPOINT, DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT
from segment_sync.spec import AlertSettings, LogSettings, ModelSpec, ProjectSpec, SyncSpec


class SegmentSyncConfigError(ValueError):
    """A defs.yaml that cannot become syncs; the message names the file and the field."""


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return str(error["msg"]).removeprefix("Value error, ")
    return str(exc)


class WarehouseSettings(BaseModel):
    """Which warehouse to read; its URL (and password) only ever comes from the environment."""

    model_config = ConfigDict(extra="forbid")
    url_env: str = Field(default="WAREHOUSE_URL", description="Environment variable holding the SQLAlchemy URL.")
    kind: str | None = Field(default=None, description="Shown on warehouse tables in the UI: postgres, duckdb, ...")
    demo_fallback: bool = Field(
        default=False, description="Use the embedded DuckDB demo warehouse when the URL variable is unset."
    )
    read_path: Literal["auto", "sqlalchemy"] = Field(
        default="auto",
        description="How models are read. auto: DuckDB's native Arrow reader or PostgreSQL's COPY where they apply "
        "(same dtypes and values as SQLAlchemy, several times faster; a PostgreSQL model with a column type they "
        "cannot map exactly, e.g. json or arrays, still goes through SQLAlchemy); sqlalchemy: always SQLAlchemy.",
    )


class SegmentSettings(BaseModel):
    """Where events go and how hard to retry."""

    model_config = ConfigDict(extra="forbid")
    destination: Literal["http", "outbox"] | None = Field(
        default=None, description="http (Segment) or outbox (local files); else SEGMENT_DESTINATION, else http."
    )
    endpoint: str | None = Field(
        default=None,
        description=f"Else SEGMENT_ENDPOINT, else {DEFAULT_ENDPOINT}; EU: https://events.eu1.segmentapis.com",
    )
    write_key_env: str = Field(default="SEGMENT_WRITE_KEY", description="Environment variable holding the write key.")
    gzip: bool = True
    gzip_level: int = Field(
        default=DEFAULT_GZIP_LEVEL, description="1 to 9: 1 is fastest (the default), 9 gives the smallest bodies."
    )
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT, description="Requests sent at once per sync; 1 sends one at a time."
    )
    timeout_seconds: float = 30.0
    max_attempts: int = 8
    max_retry_seconds: float = 600.0
    max_batch_bytes: int = Field(
        default=MAX_BATCH_BYTES, description=f"Largest request body: {MIN_BATCH_BYTES:,} to {MAX_BATCH_BYTES:,} bytes."
    )
    max_requests_per_second: float | None = Field(
        default=None, description="Pace requests per write key (Segment asks for at most 1,000/s per workspace)."
    )
    max_events_per_second: float | None = Field(default=None, description="Pace events per write key.")


class SegmentSyncComponent(dg.Component, dg.Model, dg.Resolvable):
    """Sync warehouse models to Segment: track, audience (Segment Entered/Exited), identify and group."""

    models: list[ModelSpec]
    syncs: list[SyncSpec]
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    segment: SegmentSettings = Field(default_factory=SegmentSettings)
    state_dir: str | None = Field(
        default=None, description="Else SEGMENT_SYNC_STATE_DIR, else .segment_sync in the project."
    )
    group_name: str = "segment_sync"
    owners: list[str] = Field(default_factory=list, description="Owners of the assets: emails or team:name.")
    sync_log: LogSettings = Field(default_factory=LogSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = context.path / "defs.yaml"
        try:
            project = ProjectSpec(models=self.models, syncs=self.syncs)
            return self._build(project, context, str(source))
        except (ValueError, ValidationError) as exc:
            raise SegmentSyncConfigError(f"{source}: attributes.{_first_error(exc)}") from None

    def _build(self, project: ProjectSpec, context: dg.ComponentLoadContext, source: str) -> dg.Definitions:
        return build_definitions(
            project,
            warehouse=WarehouseResource(
                url_env=self.warehouse.url_env,
                demo_fallback=self.warehouse.demo_fallback,
                read_path=self.warehouse.read_path,
            ),
            segment=SegmentResource(**self.segment.model_dump()),
            state=StateResource(state_dir=self.state_dir or default_state_dir(context.project_root)),
            options=AssetOptions(self.group_name, tuple(self.owners), self.warehouse.kind),
            logs=self.sync_log,
            alerts=self.alerts,
            source=source,
        )
