"""Models and syncs as declared in YAML: validated, with no Dagster imports."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from segment_sync.field_mapping import (
    SOURCE_HELP,
    Column,
    FieldMapping,
    FieldSource,
    Tree,
    check_json,
    columns_of,
    mappings_of,
    tree_of,
)

NAME_PATTERN = re.compile(r"[a-z0-9_]+")
SyncType = Literal["track", "audience", "identify", "group"]
DuplicatePolicy = Literal["fail", "keep_first", "keep_last"]
ChangeKind = Literal["added", "changed", "removed"]
Engine = Literal["polars", "warehouse"]
TimestampUnit = Literal["s", "ms"]
SOURCE_KEYS = ("static", "template")


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
    def needed_columns(self) -> list[str]:
        """The columns the query must return: the key's, and order_by's with keep_first / keep_last."""
        return [*self.key_columns, *([self.order_by] if self.on_duplicate_key != "fail" and self.order_by else [])]

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
    fields: dict[str, FieldSource] | list[str] = Field(
        default_factory=dict,
        description="Property/trait name -> column, {static: value} or {template: text}; a dotted name nests "
        "(address.city), a backslash keeps a dot literal (utm\\.source). A list sends columns under their names.",
    )
    context: dict[str, FieldSource] = Field(
        default_factory=dict,
        description="Segment context field (ip, locale, traits.email, ...) -> column, {static: value} or "
        "{template: text}; sent but not compared: a change only here is not a change.",
    )
    integrations: str | dict[str, Any] | None = Field(
        default=None,
        description="Segment's per-destination switches: an object ({All: false, Mixpanel: true}), or a column "
        "holding a JSON object per row. Sent but not compared.",
    )
    omit_nulls: bool = Field(default=False, description="Leave out mapped values that are null instead of null.")
    timestamp_unit: TimestampUnit | None = Field(
        default=None, description="s or ms: the timestamp column holds seconds or milliseconds since 1970."
    )
    changed_fields: str | None = Field(
        default=None, description="Changed events (track, identify): list the fields that changed under this name."
    )
    previous_values: str | None = Field(
        default=None, description="Changed events (track, identify): the changed fields' old values, under this name."
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
    preview_values: bool = Field(
        default=False,
        description="Show row values (in full) in the UI's previews and test events; else keys and field names only, "
        "which keeps customers' data out of Dagster's event log.",
    )

    _name = field_validator("name")(_check_name)

    @field_validator("max_removed_percent", "max_added_percent", "guard_min_rows")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("fields", "context", mode="before")
    @classmethod
    def _known_sources(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            for name, source in value.items():
                if isinstance(source, dict) and (len(source) != 1 or next(iter(source)) not in SOURCE_KEYS):
                    raise ValueError(
                        f"sync {info.data.get('name')!r}: {info.field_name}.{name}: {source!r} is not a value to "
                        f"send; use {SOURCE_HELP}"
                    )
        return value

    @field_validator("fields", "context")
    @classmethod
    def _no_empty_names(cls, value: dict[str, FieldSource] | list[str]) -> dict[str, FieldSource] | list[str]:
        columns = [v for v in value.values() if isinstance(v, str)] if isinstance(value, dict) else []
        names = value if isinstance(value, list) else [*value.keys(), *columns]
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError("field names and columns must be non-empty strings")
        return value

    @field_validator("integrations")
    @classmethod
    def _integration_switches(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value == "":
            raise ValueError("integrations: name a column holding a JSON object, or give the object itself")
        for name, switch in value.items() if isinstance(value, dict) else ():
            if not isinstance(switch, bool | dict):
                raise ValueError(
                    f"integrations.{name}: {switch!r} is neither true, false nor an object of that destination's "
                    "settings"
                )
            try:
                check_json(switch)
            except ValueError as exc:
                raise ValueError(f"integrations.{name}: {exc}") from None
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
        if self.timestamp_unit is not None and self.timestamp is None:
            raise ValueError(f"{where}: 'timestamp_unit' says how the timestamp column counts time; set 'timestamp'")
        try:
            self._check_mappings()
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return self

    def _check_mappings(self) -> None:
        fields = self.field_tree  # parsed here, so that a bad name or template fails as the YAML loads
        if "library" in self.context_tree:
            raise ValueError("context.library is segment-sync's own (its name and version); map another name")
        names = [("changed_fields", self.changed_fields), ("previous_values", self.previous_values)]
        for setting, name in names:
            if name is None:
                continue
            if not name.strip():
                raise ValueError(f"'{setting}' must be a property or trait name, not empty")
            if not (self.type == "identify" or (self.type == "track" and self.events and self.events.changed)):
                raise ValueError(
                    f"'{setting}' describes changed events: it needs a track sync with events.changed, or an "
                    "identify sync"
                )
            if name in fields:
                raise ValueError(f"'{setting}' is {name!r}, which a field in 'fields' sends too; choose another name")
        if self.changed_fields is not None and self.changed_fields == self.previous_values:
            raise ValueError("'changed_fields' and 'previous_values' need two different names")

    @cached_property
    def field_mappings(self) -> list[FieldMapping]:
        """What goes into the properties or traits, in declared order (a list of columns keeps their names)."""
        if isinstance(self.fields, list):
            return [FieldMapping(c, (c,), Column(c)) for c in self.fields]
        return mappings_of(self.fields, "fields")

    @cached_property
    def field_tree(self) -> Tree:
        """The properties or traits, nested by name."""
        return tree_of(self.field_mappings, "fields")

    @cached_property
    def context_mappings(self) -> list[FieldMapping]:
        """What goes into the event's context beside the library, in declared order."""
        return mappings_of(self.context, "context")

    @cached_property
    def context_tree(self) -> Tree:
        """The context fields, nested by name."""
        return tree_of(self.context_mappings, "context")

    @property
    def integrations_column(self) -> str | None:
        """The column holding each row's integrations object, if they come from a column."""
        return self.integrations if isinstance(self.integrations, str) else None

    @cached_property
    def sent_columns(self) -> list[str]:
        """Every model column this sync sends, in a stable order."""
        others = [self.timestamp, self.message_id, self.integrations_column, *columns_of(self.context_mappings)]
        return sorted({*self.compared_columns, *(c for c in others if c is not None)})

    @cached_property
    def compared_columns(self) -> list[str]:
        """The sent columns whose change is a change of the row: ids and fields' columns, not the timestamp,
        messageId, context or integrations."""
        cols = [self.user_id, self.anonymous_id, self.group_id, *columns_of(self.field_mappings)]
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
