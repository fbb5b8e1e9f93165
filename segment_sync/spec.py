"""Models and syncs as declared in YAML: validated, with no Dagster imports."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = re.compile(r"[a-z0-9_]+")
SyncType = Literal["track", "audience", "identify", "group"]
DuplicatePolicy = Literal["fail", "keep_first", "keep_last"]
ChangeKind = Literal["added", "changed", "removed"]
Engine = Literal["polars", "warehouse"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: use lowercase letters, digits and _ only")
    return value


class ModelSpec(_Strict):
    """A warehouse query (or table) whose rows are identified by a primary key."""

    name: str = Field(description="Unique model name: lowercase letters, digits, _.")
    sql: str | None = Field(default=None, description="The query that returns the model's rows.")
    table: str | None = Field(default=None, description="A table to read whole, e.g. analytics.users.")
    primary_key: str | list[str] = Field(description="One column, or a list of columns for a composite key.")
    on_duplicate_key: DuplicatePolicy = Field(
        default="fail", description="fail (send nothing), keep_first or keep_last row per key, by order_by."
    )
    order_by: str | None = Field(default=None, description="Column that orders duplicate rows for keep_first/last.")

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.sql is None) == (self.table is None):
            raise ValueError(f"model {self.name!r}: set exactly one of 'sql' or 'table'")
        if self.on_duplicate_key != "fail" and self.order_by is None:
            raise ValueError(
                f"model {self.name!r}: on_duplicate_key {self.on_duplicate_key!r} needs 'order_by', the column that "
                "decides which duplicate row is first or last"
            )
        if not self.key_columns or any(not c for c in self.key_columns):
            raise ValueError(f"model {self.name!r}: 'primary_key' must name at least one column")
        if len(set(self.key_columns)) != len(self.key_columns):
            raise ValueError(f"model {self.name!r}: 'primary_key' lists a column twice")
        return self

    @property
    def key_columns(self) -> list[str]:
        """The primary key as a list of column names."""
        return [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)

    @property
    def query(self) -> str:
        """The SQL that reads the model, without a trailing semicolon (the read paths wrap it as a subquery)."""
        return self.sql.strip().rstrip(";").rstrip() if self.sql is not None else f"select * from {self.table}"


class EventNames(_Strict):
    """Track event names per change kind; a missing name means that change sends nothing."""

    added: str | None = None
    changed: str | None = None
    removed: str | None = None

    @field_validator("added", "changed", "removed")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("event names must not be empty; leave a kind out to send nothing for it")
        return value

    def for_kind(self, kind: ChangeKind) -> str | None:
        """The event name for one change kind."""
        return getattr(self, kind)


class SyncSpec(_Strict):
    """How one model's changes become Segment events."""

    name: str = Field(description="Unique sync name: lowercase letters, digits, _.")
    model: str = Field(description="The model this sync reads.")
    type: SyncType = Field(description="track | audience | identify | group")
    user_id: str | None = Field(default=None, description="Column holding Segment's userId.")
    anonymous_id: str | None = Field(default=None, description="Column holding Segment's anonymousId.")
    group_id: str | None = Field(default=None, description="Column holding the groupId (group syncs).")
    fields: dict[str, str] | list[str] = Field(
        default_factory=dict, description="Property/trait name -> column; a list keeps the column names."
    )
    events: EventNames | None = Field(default=None, description="Track event names per change kind.")
    send_initial: bool = Field(default=False, description="Send the first run's rows (track, audience).")
    engine: Engine | None = Field(
        default=None,
        description="polars: snapshot, diff and state on local disk; warehouse: all three in warehouse tables. "
        "Unset: the component's engine.",
    )
    timestamp: str | None = Field(default=None, description="Column with the event time (backfills).")
    message_id: str | None = Field(default=None, description="Column with a messageId; else generated.")
    schedule: str | None = Field(default=None, description="Cron expression (UTC) for the sync's job.")
    schedule_status: Literal["running", "stopped"] = Field(
        default="running", description="Whether the schedule runs as soon as it is deployed."
    )
    after: list[str] = Field(
        default_factory=list,
        description="Asset keys (a/b/c) upstream of the model; the sync runs after any of them materializes.",
    )
    max_removed_percent: float = Field(
        default=50.0, description="Stop when more rows are removed than this % of the rows last delivered."
    )
    max_added_percent: float = Field(
        default=100.0, description="Stop when more rows are added than this % of the rows last delivered."
    )
    guard_min_rows: int = Field(default=10, description="Changes smaller than this many rows never stop a sync.")

    _name = field_validator("name")(_check_name)

    @field_validator("max_removed_percent", "max_added_percent", "guard_min_rows")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("fields")
    @classmethod
    def _no_empty_names(cls, value: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
        names = value if isinstance(value, list) else [*value.keys(), *value.values()]
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError("field names and columns must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _rules_per_type(self) -> SyncSpec:
        where = f"sync {self.name!r}"
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError(f"{where}: set at least one of 'user_id' or 'anonymous_id'")
        if self.type == "group" and self.group_id is None:
            raise ValueError(f"{where}: a group sync needs 'group_id'")
        if self.type != "group" and self.group_id is not None:
            raise ValueError(f"{where}: 'group_id' only applies to group syncs")
        if self.type == "track":
            if self.events is None or not any((self.events.added, self.events.changed, self.events.removed)):
                raise ValueError(f"{where}: a track sync needs 'events' with at least one event name")
        elif self.events is not None:
            raise ValueError(f"{where}: 'events' only applies to track syncs (audience names are fixed)")
        if self.send_initial and self.type in ("identify", "group"):
            raise ValueError(f"{where}: identify and group syncs always send the initial set; drop 'send_initial'")
        return self

    @cached_property
    def field_map(self) -> dict[str, str]:
        """Segment property/trait name -> column."""
        return {c: c for c in self.fields} if isinstance(self.fields, list) else dict(self.fields)

    @cached_property
    def sent_columns(self) -> list[str]:
        """Every model column this sync sends, in a stable order."""
        return sorted({*self.compared_columns, *(c for c in (self.timestamp, self.message_id) if c is not None)})

    @cached_property
    def compared_columns(self) -> list[str]:
        """The sent columns whose change is a change of the row: ids and fields, not the timestamp or messageId."""
        cols = [self.user_id, self.anonymous_id, self.group_id, *self.field_map.values()]
        return sorted({c for c in cols if c is not None})

    @property
    def sends_initial(self) -> bool:
        """Whether the first run's rows become events."""
        return self.send_initial or self.type in ("identify", "group")


class LogSettings(_Strict):
    """How long run logs are kept, and where else the row-level sync log goes."""

    retention_days: float = Field(default=7.0, description="Delete row logs, rejected rows and API calls after this.")
    warehouse_table: str | None = Field(
        default=None, description="Also append each run's row log to this warehouse table, e.g. segment_sync_log."
    )


class ProjectSpec(_Strict):
    """All models and syncs of one component, checked against each other."""

    models: list[ModelSpec]
    syncs: list[SyncSpec]
    engine: Engine = "polars"

    @model_validator(mode="after")
    def _names_and_links(self) -> ProjectSpec:
        for field, names in (("models", [m.name for m in self.models]), ("syncs", [s.name for s in self.syncs])):
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise ValueError(
                        f"{field}[{i}].name: two {field} are named {name!r} ({field}[{names.index(name)}] too); "
                        "names must be unique"
                    )
        models = [m.name for m in self.models]
        for i, sync in enumerate(self.syncs):
            if sync.model not in models:
                raise ValueError(
                    f"syncs[{i}].model: sync {sync.name!r} reads model {sync.model!r}, which is not defined "
                    f"(models: {', '.join(models) or 'none'})"
                )
        for model in self.models:
            engines = {self.engine_of(s) for s in self.syncs if s.model == model.name}
            if len(engines) > 1:
                raise ValueError(
                    f"syncs: the syncs of model {model.name!r} use both engines; its snapshot lives on local disk "
                    "(polars) or in the warehouse (warehouse), so give them one engine"
                )
        return self

    def engine_of(self, sync: SyncSpec) -> Engine:
        """The engine a sync runs on: its own, else the component's."""
        return sync.engine or self.engine

    def model_engine(self, model: str) -> Engine:
        """The engine of a model's snapshot: that of its syncs (the component's when it has none)."""
        return next((self.engine_of(s) for s in self.syncs if s.model == model), self.engine)

    def model(self, name: str) -> ModelSpec:
        """The model with this name."""
        return next(m for m in self.models if m.name == name)
