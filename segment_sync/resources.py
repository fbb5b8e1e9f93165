"""Dagster resources: the warehouse, the Segment destination and where sync state lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from segment_sync.segment_api.batching import MAX_BATCH_BYTES, MIN_BATCH_BYTES, check_max_batch_bytes
from segment_sync.segment_api.client import RetryPolicy
from segment_sync.segment_api.pacing import Pacer, pacer_for
from segment_sync.segment_api.transport import (
    DEFAULT_ENDPOINT,
    DEFAULT_GZIP_LEVEL,
    DEFAULT_MAX_IN_FLIGHT,
    Outbox,
    SegmentHttp,
    Transport,
    check_gzip_level,
    check_max_in_flight,
)

Destination = Literal["http", "outbox"]


class StateResource(dg.ConfigurableResource):
    """Where snapshots, diffs and each sync's delivered state live (never inside the Dagster instance)."""

    state_dir: str | None = Field(default=None, description="Overridden by SEGMENT_SYNC_STATE_DIR.")

    def root(self) -> Path:
        """The state directory, created if needed."""
        chosen = dg.EnvVar("SEGMENT_SYNC_STATE_DIR").get_value() or self.state_dir or ".segment_sync"
        path = Path(chosen).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse that models are read from, by SQLAlchemy URL taken from the environment."""

    model_config = ConfigDict(extra="forbid")

    url_env: str = Field(default="WAREHOUSE_URL", description="Environment variable with the SQLAlchemy URL.")
    demo_fallback: bool = Field(
        default=False, description="When the variable is unset, use (and seed) the embedded DuckDB demo warehouse."
    )
    kind: str | None = Field(default=None, description="Shown on warehouse tables in the UI: postgres, duckdb, ...")
    read_path: Literal["auto", "sqlalchemy"] = Field(
        default="auto",
        description="auto: DuckDB's native Arrow reader or PostgreSQL's COPY where they apply (same dtypes and "
        "values, several times faster), else SQLAlchemy; sqlalchemy: always SQLAlchemy.",
    )

    state_schema: str = Field(
        default="segment_sync",
        description="Schema of the warehouse engine's tables (sync state, leases, snapshots, diffs); created on first "
        "run.",
    )

    lease_seconds: int = Field(
        default=300,
        description="Warehouse engine: how long a run's lease on its sync lasts unless renewed (every third of it); "
        "a killed run blocks its sync this long.",
    )

    @field_validator("lease_seconds")
    @classmethod
    def _long_enough(cls, value: int) -> int:
        if value < 5:
            raise ValueError(f"warehouse.lease_seconds is {value}; use 5 or more (it is renewed every third of it)")
        return value

    def url(self, state_dir: Path) -> str:
        """The warehouse URL; it may hold a password, so never log it (use warehouse.safe_url)."""
        url = dg.EnvVar(self.url_env).get_value()
        if url:
            return url
        if self.demo_fallback:
            from segment_sync.warehouse.demo_warehouse import ensure_demo_warehouse  # DuckDB loads only for the demo

            return f"duckdb:///{ensure_demo_warehouse(state_dir / 'demo_warehouse.duckdb')}"
        raise dg.Failure(f"{self.url_env} is not set: set it to the warehouse's SQLAlchemy URL")


class SegmentResource(dg.ConfigurableResource):
    """Segment's HTTP Tracking API, or a local outbox of the exact request bodies."""

    model_config = ConfigDict(extra="forbid")

    destination: str | None = Field(
        default=None, description="http or outbox; when unset, SEGMENT_DESTINATION, else http."
    )
    endpoint: str | None = Field(
        default=None, description=f"API host; when unset, SEGMENT_ENDPOINT, else {DEFAULT_ENDPOINT}."
    )
    write_key_env: str = Field(default="SEGMENT_WRITE_KEY", description="Environment variable with the write key.")
    gzip: bool = Field(default=True, description="Compress request bodies.")
    gzip_level: int = Field(
        default=DEFAULT_GZIP_LEVEL, description="1 to 9: 1 is fastest (the default), 9 gives the smallest bodies."
    )
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT, description="Requests sent at once per sync; 1 sends one at a time."
    )
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")
    max_attempts: int = Field(default=8, description="Attempts per batch before the run gives up (at least 1).")
    max_retry_seconds: float = Field(default=600.0, description="Time budget for retrying one batch.")
    max_batch_bytes: int = Field(
        default=MAX_BATCH_BYTES, description=f"Largest request body: {MIN_BATCH_BYTES:,} to {MAX_BATCH_BYTES:,} bytes."
    )
    max_requests_per_second: float | None = Field(default=None, description="Pace requests per write key.")
    max_events_per_second: float | None = Field(default=None, description="Pace events per write key.")

    @field_validator("gzip_level", "max_in_flight", "max_batch_bytes")
    @classmethod
    def _in_range(cls, value: int, info: ValidationInfo) -> int:
        """Refuse a gzip level, requests in flight or batch size out of range when the definitions load."""
        check = {"gzip_level": check_gzip_level, "max_in_flight": check_max_in_flight}.get(
            info.field_name or "", check_max_batch_bytes
        )
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"segment.{exc}") from None
        return value

    def resolved_destination(self) -> Destination:
        """http or outbox, from YAML or the environment."""
        chosen = self.destination or dg.EnvVar("SEGMENT_DESTINATION").get_value() or "http"
        if chosen not in ("http", "outbox"):
            raise dg.Failure(f"the Segment destination is {chosen!r}; use 'http' or 'outbox'")
        return chosen  # type: ignore[return-value]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail before any work when HTTP delivery has no write key."""
        if self.resolved_destination() == "http" and not dg.EnvVar(self.write_key_env).get_value():
            raise dg.Failure(
                f"{self.write_key_env} is not set, so nothing can be sent to Segment. Set it to the write key "
                "of a Segment HTTP API source, or set SEGMENT_DESTINATION=outbox to write request bodies to files."
            )

    def transport(self, outbox_path: Path) -> Transport:
        """The destination for one sync's request bodies."""
        if self.resolved_destination() == "outbox":
            return Outbox(outbox_path)
        endpoint = self.endpoint or dg.EnvVar("SEGMENT_ENDPOINT").get_value() or DEFAULT_ENDPOINT
        write_key = dg.EnvVar(self.write_key_env).get_value() or ""
        return SegmentHttp(
            write_key,
            endpoint,
            timeout=self.timeout_seconds,
            gzip_body=self.gzip,
            gzip_level=self.gzip_level,
            max_in_flight=self.max_in_flight,
        )

    def pacer(self) -> Pacer:
        """The pacer shared by the syncs of this process that use the same write key."""
        write_key = dg.EnvVar(self.write_key_env).get_value() if self.resolved_destination() == "http" else None
        return pacer_for(write_key, self.max_requests_per_second, self.max_events_per_second)

    def retry_policy(self) -> RetryPolicy:
        """How hard to retry a batch."""
        return RetryPolicy(max_attempts=self.max_attempts, max_total_seconds=self.max_retry_seconds)


def default_state_dir(project_root: Path) -> str:
    """The state directory when neither YAML nor the environment names one."""
    return os.fspath(project_root / ".segment_sync")
