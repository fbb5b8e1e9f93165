"""Diff rows into Segment payloads with Polars expressions, byte for byte what `events.build_outcomes` gives.

Added and changed rows are built from the typed `_row` struct: the properties or traits are the sent columns
encoded as `_after` encodes them, and ids, timestamps and messageIds follow `events.build_event`. Removed rows
(which only have `_before`) get their typed row read back from that content, where writing it again gives the
same content. Both splice each value's JSON text as the content holds it. The rows this cannot build
by columns go through `build_outcomes`: nested and other values Polars cannot write (from dialects read by
inference), ids from fractional numbers or JSON columns, timestamps that are neither text nor dates nor
datetimes (with a `timestamp_unit`: integers out of years 1 to 9999), JSON strings in templates,
integrations columns holding something other than an object, and removed rows whose content does not read back
exactly (decimals, narrow floats, JSON columns, or a column whose type changed since). What a changed row's
change is (`change_description`) is worked out row by row for both paths, from the contents before and after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import polars as pl
import polars_hash  # noqa: F401 - registers the `chash` expressions

from segment_sync.events import rules
from segment_sync.events.change_columns import change_members_column
from segment_sync.events.change_description import describes_changes
from segment_sync.events.event_time import MAX_MS, MIN_MS, UNIT_FACTOR, event_time, segment_timestamp
from segment_sync.events.row_builder import DiffRow, Outcome, build_outcomes, identity
from segment_sync.events.row_values import RowRejected, value_of
from segment_sync.events.rules import LIBRARY, MAX_MESSAGE_ID_CHARS, event_name
from segment_sync.field_mapping import Column, Source, Static, Template, Tree
from segment_sync.segment_api.batching import MAX_EVENT_BYTES
from segment_sync.spec import SyncSpec
from segment_sync.values.encoding import column, content_expr, dumps, is_plain, json_ready, json_value
from segment_sync.values.json_column import is_json, text_of
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, HASH, KEY, KIND, ROW

OUTCOME, TYPE, NAME, MESSAGE_ID, REASON, PAYLOAD = "outcome", "type", "name", "message_id", "reason", "payload"
EVENT_FRAME_SCHEMA = {
    KEY: pl.String,
    KIND: pl.String,
    AFTER: pl.String,
    HASH: pl.UInt64,
    OUTCOME: pl.String,  # event, skipped or rejected
    TYPE: pl.String,
    NAME: pl.String,
    MESSAGE_ID: pl.String,
    REASON: pl.String,
    PAYLOAD: pl.Binary,
}
KINDS = ("added", "changed", "removed")
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())  # what str.strip() removes
_INDEX, _BAG, _UID, _AID, _GID, _MID, _DIGEST = "_i", "_bag", "_uid", "_aid", "_gid", "_mid", "_digest"
_TS, _TS_TEXT, _TS_REASON = "_ts", "_ts_text", "_ts_reason"
_CONTEXT, _INTEGRATIONS, _CHANGES = "_context", "_integrations", "_changes"
LIBRARY_JSON = dumps(LIBRARY).decode()
ISO_MILLIS = "%Y-%m-%dT%H:%M:%S%.3fZ"
_SECOND = "_second"  # the added half of a split row comes after its removed half
_HAZARD, _MID_HAZARD = "_hazard", "_mid_hazard"  # rows left to the row-wise path (the second only if added)


def build_event_frame(
    sync: SyncSpec, diff: pl.DataFrame, sync_uuid: str, *, initial: bool, removed_at: str | None = None
) -> pl.DataFrame:
    """The outcome of each diff row, in the diff's order (see EVENT_FRAME_SCHEMA): an event, a skip or a rejection.

    An event has its type, name (track only), messageId and payload; a rejection its reason. `diff` has the
    diff's columns including `_row`; `_after` and `_hash` are passed through for the state. Removed rows are
    timed at `removed_at` (see `events.build_event`).
    """
    unknown = set(diff[KIND].unique().to_list()) - set(KINDS)
    if unknown:
        raise ValueError(f"diff rows of kind {sorted(unknown, key=str)} cannot become events; only {KINDS} can")
    rows = diff.with_row_index(_INDEX)
    send_rows = sync.sends_initial or not initial
    names = {kind: event_name(sync, kind) for kind in KINDS} if send_rows else {}
    sending = pl.col(KIND).is_in([kind for kind, name in names.items() if name is not None])
    skipped = rows.filter(~sending).with_columns(pl.lit("skipped").alias(OUTCOME))
    built, rest = _build_columnar(sync, rows.filter(sending), sync_uuid, names, removed_at)
    outcomes = build_outcomes(sync, _diff_rows(rest), sync_uuid, initial=initial, removed_at=removed_at)
    row_wise = rest.select(_INDEX, KEY, KIND, AFTER, HASH).hstack(outcome_columns(list(outcomes)))
    parts = [_shaped(part) for part in (skipped, built, row_wise) if not part.is_empty()]
    if len(parts) == 1:  # the common case: every row sent and built by columns, already in order
        return parts[0].drop(_INDEX)
    return pl.concat([_shaped(rows.clear()), *parts]).sort(_INDEX).drop(_INDEX)


def split_identity_changes(sync: SyncSpec, diff: pl.DataFrame, generation: int) -> pl.DataFrame:
    """An audience diff where a member whose user or anonymous id changed exits as the identity that entered and
    enters as the new one: its changed row becomes a removed row, then an added row of this `generation`."""
    if sync.type != "audience" or diff.is_empty():
        return diff
    rows = diff.with_row_index(_INDEX)
    changed = rows.filter(pl.col(KIND) == "changed").select(_INDEX, BEFORE, AFTER)
    moved = [i for i, before, after in changed.iter_rows() if identity(sync, before) != identity(sync, after)]
    if not moved:
        return diff
    is_moved = pl.col(_INDEX).is_in(moved)
    exits = rows.filter(is_moved).with_columns(
        pl.lit("removed").alias(KIND),
        pl.lit(None, pl.String).alias(AFTER),
        pl.lit(None, pl.UInt64).alias(HASH),
        pl.lit(None, diff.schema[ROW]).alias(ROW),
    )
    enters = rows.filter(is_moved).with_columns(
        pl.lit("added").alias(KIND),
        pl.lit(generation, pl.Int64).alias(BEFORE_GEN),
        pl.lit(None, pl.String).alias(BEFORE),
    )
    first = pl.lit(0, pl.Int8).alias(_SECOND)
    parts = [rows.filter(~is_moved).with_columns(first), exits.with_columns(first), enters.with_columns(first + 1)]
    return pl.concat(parts).sort(_INDEX, _SECOND).select(diff.columns)


def outcome_columns(outcomes: Sequence[Outcome]) -> pl.DataFrame:
    """Row-wise outcomes as the outcome columns of `build_event_frame`."""
    events = [o.event for o in outcomes]
    data = {
        OUTCOME: ["skipped" if o.skipped else "rejected" if o.rejected is not None else "event" for o in outcomes],
        TYPE: [e.type if e else None for e in events],
        NAME: [e.name if e else None for e in events],
        MESSAGE_ID: [e.message_id if e else None for e in events],
        REASON: [o.rejected for o in outcomes],
        PAYLOAD: [e.payload if e else None for e in events],
    }
    return pl.DataFrame(data, schema={name: EVENT_FRAME_SCHEMA[name] for name in data})


def _diff_rows(rows: pl.DataFrame) -> list[DiffRow]:
    return [DiffRow(*r) for r in rows.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]


def _shaped(part: pl.DataFrame) -> pl.DataFrame:
    return part.select(
        _INDEX,
        *((pl.col(n) if n in part.columns else pl.lit(None)).cast(t).alias(n) for n, t in EVENT_FRAME_SCHEMA.items()),
    )


# --- the columnar path -------------------------------------------------------------------------------------


def _build_columnar(
    sync: SyncSpec, rows: pl.DataFrame, sync_uuid: str, names: Mapping[str, str | None], removed_at: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events or rejections of the rows the columnar path builds exactly, and the rows left for the row-wise path."""
    plan = _Plan.of(sync, rows.schema[ROW])
    if plan is None or rows.is_empty():
        return rows.clear(), rows
    groups = [_built_values(plan, rows.filter((pl.col(KIND) != "removed") & pl.col(ROW).is_not_null()))]
    removed = rows.filter(pl.col(KIND) == "removed")
    if not removed.is_empty():  # timed by the snapshot, not by their timestamp column
        untimed = _Plan(sync.model_copy(update={"timestamp": None}), plan.schema)
        stamp = None if removed_at is None else segment_timestamp(removed_at, "snapshot time")
        groups += [g.with_columns(pl.lit(stamp, pl.String).alias(_TS)) for g in _removed_values(untimed, removed)]
    groups = [g for g in groups if not g.is_empty()]
    if not groups:
        return rows.clear(), rows
    good = groups[0] if len(groups) == 1 else pl.concat(groups).sort(_INDEX)
    rest = rows.filter(~pl.col(_INDEX).is_in(good[_INDEX].implode())) if good.height < rows.height else rows.clear()
    good = good.with_columns(_message_digests(sync, sync_uuid)).with_columns(_message_ids(sync))
    described = describes_changes(sync) and names.get("changed") is not None
    if described:
        good = good.with_columns(_change_members(sync))
    message_type = "track" if sync.type in ("track", "audience") else sync.type
    good = good.with_columns(_payload(sync, message_type, names, described).alias(PAYLOAD), _reason(sync).alias(REASON))
    size = pl.col(PAYLOAD).str.len_bytes()
    oversized = good.select(pl.when(pl.col(REASON).is_null() & (size > MAX_EVENT_BYTES)).then(size))[PAYLOAD]
    if oversized.is_not_null().any():
        reasons = [None if n is None else rules.oversized(n) for n in oversized.to_list()]
        good = good.with_columns(pl.coalesce(REASON, pl.Series(reasons, dtype=pl.String)).alias(REASON))
    event = pl.col(REASON).is_null()
    built = good.select(
        _INDEX,
        KEY,
        KIND,
        AFTER,
        HASH,
        pl.when(event).then(pl.lit("event")).otherwise(pl.lit("rejected")).alias(OUTCOME),
        pl.when(event).then(pl.lit(message_type)).alias(TYPE),
        pl.when(event).then(pl.col(KIND).replace_strict(names, default=None, return_dtype=pl.String)).alias(NAME),
        pl.when(event).then(pl.col(_MID)).alias(MESSAGE_ID),
        REASON,
        pl.when(event).then(pl.col(PAYLOAD)).cast(pl.Binary).alias(PAYLOAD),
    )
    return built, rest


def _built_values(plan: _Plan, candidates: pl.DataFrame) -> pl.DataFrame:
    """Candidate rows with the plan's columns (bag, ids, timestamp, messageId), less the rows it cannot build."""
    computed = plan.expressions()  # with_columns: literals take the frame's height
    values = candidates.select(ROW).unnest(ROW).lazy().with_columns(computed)
    values = values.select(e.meta.output_name() for e in computed).collect(engine="in-memory")  # less CPU than "auto"
    frame = pl.concat([candidates.drop(ROW), values], how="horizontal")
    good = frame.filter(~(pl.col(_HAZARD) | (pl.col(_MID_HAZARD) & _uses_message_id_column())))
    if plan.python_timestamps:
        good = good.with_columns(_python_timestamps(good[_TS_TEXT], plan.sync))
    return good.drop(_TS_TEXT, _HAZARD, _MID_HAZARD, strict=False)


def _removed_values(plan: _Plan, removed: pl.DataFrame) -> list[pl.DataFrame]:
    """`_built_values` of removed rows, their typed rows read back from the delivered content where that is exact.

    A content is read back only when writing the row again gives the same content, byte for byte: the row is
    then built as an added row with that content would be, and `build_event` (which reads the content with
    `encoding.loads`) sees the same values. Other rows stay row-wise.
    """
    as_json = _content_schema(plan.schema)
    if not as_json:
        return []
    schema = plan.schema
    field = pl.col(ROW).struct.field
    typed = pl.struct([_read_back(field(name), dtype).alias(name) for name, dtype in schema.items()])
    try:
        rows = removed.filter(pl.col(BEFORE).is_not_null())
        rows = rows.with_columns(pl.col(BEFORE).str.json_decode(pl.Struct(as_json)).alias(ROW))
        rows = rows.with_columns(typed.alias(ROW))
    except pl.exceptions.PolarsError:  # a value of another type, e.g. the column's type changed since
        return []
    again = content_expr(schema, list(schema), source=field)
    return [_built_values(plan, rows.filter(again == pl.col(BEFORE)))]


def _content_schema(schema: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The JSON types a content holds each sent column's values as, or {} when a column's type is not read back."""
    as_json: dict[str, pl.DataType] = {}
    for name, dtype in schema.items():
        kind = _kind_of(dtype)
        if kind in ("text", "datetime", "date", "time") or dtype == pl.Null:
            as_json[name] = pl.String
        elif kind == "int" and dtype not in (pl.Int128, pl.UInt128):
            as_json[name] = pl.UInt64 if dtype in (pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64) else pl.Int64
        elif dtype in (pl.Float64, pl.Boolean):
            as_json[name] = dtype
        else:
            return {}  # decimals, narrow floats, JSON, nested: their text is not read back by type
    return as_json


def _read_back(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A JSON value as the column type it was written from (`encoding.json_ready`); null where it cannot be."""
    if isinstance(dtype, pl.Datetime):
        utc = value.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit=dtype.time_unit, time_zone="UTC", strict=False)
        return utc.dt.replace_time_zone(None) if dtype.time_zone is None else utc.dt.convert_time_zone(dtype.time_zone)
    if dtype == pl.Date:
        return value.str.to_date("%Y-%m-%d", strict=False)
    if dtype == pl.Time:
        return value.str.to_time("%H:%M:%S%.f", strict=False)
    return value.cast(dtype, strict=False)


def _json_text(expr: pl.Expr) -> pl.Expr:
    """A value's JSON text as orjson writes it (Polars escapes strings the same way)."""
    return pl.struct(expr.alias("v")).struct.json_encode().str.slice(len('{"v":')).str.strip_suffix("}")


def _quoted(expr: pl.Expr) -> pl.Expr:
    """A JSON string of text that needs no escaping (digits, dashes, colons, letters)."""
    return pl.concat_str([pl.lit('"'), expr, pl.lit('"')])


def _kind_of(dtype: pl.DataType) -> str:
    if is_json(dtype):
        return "json"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Decimal):
        return "decimal"
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return "text"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype in (pl.Date, pl.Time, pl.Boolean, pl.Null):
        return str(dtype).lower()
    return "other"


def _any(hazards: Sequence[pl.Expr | None]) -> pl.Expr:
    found = [h for h in hazards if h is not None]
    return pl.any_horizontal(found).fill_null(False) if found else pl.lit(False)


@dataclass(frozen=True)
class _Plan:
    """How sent columns become the properties or traits, ids, timestamp and messageId; and which rows to leave."""

    sync: SyncSpec
    schema: Mapping[str, pl.DataType]

    @classmethod
    def of(cls, sync: SyncSpec, row_dtype: pl.DataType) -> _Plan | None:
        """The plan for a `_row` struct type, or None when no row can be built exactly by columns."""
        schema = {f.name: f.dtype for f in row_dtype.fields} if isinstance(row_dtype, pl.Struct) else {}
        return cls(sync, schema) if schema else None

    @property
    def python_timestamps(self) -> bool:
        """Whether the timestamp column's values are parsed by `event_time`: ISO text, epoch numbers but integers."""
        ts = self.sync.timestamp
        if ts is None:
            return False
        kind = _kind_of(self.schema[ts])
        if self.sync.timestamp_unit is None:
            return kind in ("text", "time")
        return kind not in ("int", "null", "other")

    def expressions(self) -> list[pl.Expr]:
        """Columns computed from the unnested `_row`: bag, ids, timestamp, messageId, context, integrations, hazards."""
        sync = self.sync
        bag, hazards = self._object(sync.field_tree)
        exprs = [bag.alias(_BAG)]
        for alias, name in ((_UID, sync.user_id), (_AID, sync.anonymous_id), (_GID, sync.group_id)):
            value, hazard = self._id(name)
            exprs.append(value.alias(alias))
            hazards.append(hazard)
        ts_value, ts_hazard = self._timestamp()
        mid_value, mid_hazard = self._message_id()
        exprs += [ts_value.alias(_TS), pl.lit(None, pl.String).alias(_TS_REASON), mid_value.alias(_MID)]
        if self.python_timestamps:
            ts = sync.timestamp or ""
            text = self._text(ts) if sync.timestamp_unit is None else json_value(self.schema, ts)
            exprs.append(text.alias(_TS_TEXT))
        hazards.append(ts_hazard)
        if sync.context_tree:
            context, context_hazards = self._object(sync.context_tree)
            exprs.append(context.alias(_CONTEXT))
            hazards += context_hazards
        integrations, integrations_hazard = self._integrations()
        exprs.append(integrations.alias(_INTEGRATIONS))
        hazards.append(integrations_hazard)
        return [*exprs, _any(hazards).alias(_HAZARD), _any([mid_hazard]).alias(_MID_HAZARD)]

    def _object(self, tree: Tree) -> tuple[pl.Expr, list[pl.Expr | None]]:
        """A mapping tree as a JSON object, and the rows whose values it cannot write exactly.

        Without `omit_nulls`, runs of columns are encoded by one `json_encode` of a struct, which writes each value
        as the diff's content does; decimals (which it would quote), JSON columns, static values, templates and
        nested objects are spliced in as their own text. With it, each member is left out when its value is null
        (or, for a nested object, empty).
        """
        omit = self.sync.omit_nulls
        members: list[pl.Expr] = []  # JSON object members, without the braces
        run: list[pl.Expr] = []
        hazards: list[pl.Expr | None] = []

        def close_run() -> None:
            if run:
                members.append(pl.struct(run).struct.json_encode().str.strip_prefix("{").str.strip_suffix("}"))
                run.clear()

        for key, node in tree.items():
            label = pl.lit(orjson.dumps(key).decode() + ":")
            if isinstance(node, dict):
                text, inner_hazards = self._object(node)
                hazards += inner_hazards
                nothing = "{}"
            elif not omit and isinstance(node, Column) and self._runs(node.name):
                run.append(self._run_value(node.name).alias(key))
                continue
            else:
                text, hazard = self._leaf(node)
                hazards.append(hazard)
                nothing = "null"
            close_run()
            member = pl.concat_str([label, text])
            members.append(pl.when(text != nothing).then(member) if omit else member)
        if run and not members:
            return pl.struct(run).struct.json_encode(), hazards  # one run: its JSON is the whole object
        close_run()
        if not members:
            return pl.lit("{}"), hazards
        joined = pl.concat_str(members, separator=",", ignore_nulls=True).fill_null("")
        return pl.concat_str([pl.lit("{"), joined, pl.lit("}")]), hazards

    def _run_value(self, name: str) -> pl.Expr:
        """A column's values as a run's struct holds them for `json_encode`."""
        dtype = self.schema[name]
        return column(name).cast(pl.String) if _kind_of(dtype) == "text" else json_ready(dtype, name)

    def _runs(self, name: str) -> bool:
        """Whether a column's values can join a run encoded by `json_encode`."""
        return _kind_of(self.schema[name]) not in ("decimal", "json", "other")

    def _leaf(self, source: Source) -> tuple[pl.Expr, pl.Expr | None]:
        """One mapped value's JSON text ("null" for null), and the rows it cannot write exactly."""
        if isinstance(source, Static):
            return pl.lit(dumps(source.value).decode()), None
        if isinstance(source, Template):
            return self._template(source)
        dtype, col = self.schema[source.name], column(source.name)
        kind = _kind_of(dtype)
        if kind == "json":
            return text_of(col).fill_null("null"), None
        if kind == "decimal":
            return col.cast(pl.String).fill_null("null"), None
        if kind == "other":
            return pl.lit("null"), col.is_not_null()
        return json_value(self.schema, source.name), None

    def _template(self, template: Template) -> tuple[pl.Expr, pl.Expr | None]:
        """A template's JSON string (null when every column it reads is null), as `mapped_values.rendered` makes it."""
        if not template.parts:
            return pl.lit('""'), None
        pieces: list[pl.Expr] = []
        present: list[pl.Expr] = []
        hazards: list[pl.Expr | None] = []
        for part in template.parts:
            if isinstance(part, str):
                pieces.append(pl.lit(part))
                continue
            piece, hazard = self._template_piece(part.name)
            pieces.append(piece.fill_null(""))
            present.append(piece.is_not_null())
            hazards.append(hazard)
        text = pl.concat_str(pieces)
        if present:
            text = pl.when(pl.any_horizontal(present)).then(text)
        return _json_text(text), _any(hazards)

    def _template_piece(self, name: str) -> tuple[pl.Expr, pl.Expr | None]:
        """A column as a template writes it (`mapped_values.template_piece`), null for null."""
        dtype, col = self.schema[name], column(name)
        kind = _kind_of(dtype)
        if kind == "text":
            return col.cast(pl.String), None
        if kind in ("datetime", "date", "time"):
            return json_ready(dtype, name), None
        if kind in ("int", "boolean", "decimal"):
            return col.cast(pl.String), None
        if kind == "float":
            text = json_value(self.schema, name)
            return pl.when(text != "null").then(text), None
        if kind == "json":  # a JSON string is written unquoted: row-wise
            text = text_of(col)
            return pl.when(text != "null").then(text), text.str.starts_with('"')
        if kind == "null":
            return pl.lit(None, pl.String), None
        return pl.lit(None, pl.String), col.is_not_null()

    def _integrations(self) -> tuple[pl.Expr, pl.Expr | None]:
        """The integrations object's JSON (null for none), and the rows whose column holds something else."""
        declared = self.sync.integrations
        if isinstance(declared, dict):
            return pl.lit(dumps(declared).decode()), None
        name = self.sync.integrations_column
        if name is None:
            return pl.lit(None, pl.String), None
        if _kind_of(self.schema[name]) == "json":
            text = text_of(column(name))
            is_object = text.str.starts_with("{")
            return pl.when(is_object).then(text), ~is_object & (text != "null")  # the rest is rejected row-wise
        return pl.lit(None, pl.String), ~self._json_null(name)

    def _text(self, name: str) -> pl.Expr:
        """A text, date or time column as the string `_after` holds."""
        dtype = self.schema[name]
        return column(name).cast(pl.String) if _kind_of(dtype) == "text" else json_ready(dtype, name)

    def _json_null(self, name: str) -> pl.Expr:
        dtype = self.schema[name]
        return json_ready(dtype, name).is_null() if is_plain(dtype) else column(name).is_null()

    def _id(self, name: str | None) -> tuple[pl.Expr, pl.Expr | None]:
        """An id as `events._id_value` makes it (null for none), and the rows it cannot make by columns."""
        none = pl.lit(None, pl.String)
        if name is None:
            return none, None
        kind = _kind_of(self.schema[name])
        if kind in ("text", "datetime", "date", "time"):
            text = self._text(name).str.strip_chars(PY_WHITESPACE)
            return pl.when(text != "").then(text), None
        if kind == "int":
            return column(name).cast(pl.String), None
        if kind in ("boolean", "null"):
            return none, None
        return none, ~self._json_null(name)  # numbers with fractions and JSON values go row-wise

    def _timestamp(self) -> tuple[pl.Expr, pl.Expr | None]:
        none = pl.lit(None, pl.String)
        name = self.sync.timestamp
        if name is None:
            return none, None
        dtype, col = self.schema[name], column(name)
        kind = _kind_of(dtype)
        if self.sync.timestamp_unit is not None:
            return self._epoch_timestamp(name)
        if kind == "datetime":
            assert isinstance(dtype, pl.Datetime)
            utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            in_range = utc.dt.year().is_between(1, 9999)
            return utc.dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"), col.is_not_null() & ~in_range
        if kind == "date":
            return col.dt.to_string("%Y-%m-%dT00:00:00.000Z"), col.is_not_null() & ~col.dt.year().is_between(1, 9999)
        if kind in ("text", "time", "null"):
            return none, None  # text is parsed in Python (`python_timestamps`)
        return none, ~self._json_null(name)  # a rejection naming the value's Python type

    def _epoch_timestamp(self, name: str) -> tuple[pl.Expr, pl.Expr | None]:
        """Integer seconds or milliseconds as `event_time` writes them; other numbers and text are parsed in Python
        (`python_timestamps`), out-of-range integers go row-wise."""
        kind = _kind_of(self.schema[name])
        if kind != "int":
            return pl.lit(None, pl.String), column(name).is_not_null() if kind == "other" else None
        factor = UNIT_FACTOR[self.sync.timestamp_unit or "ms"]
        value = column(name).cast(pl.Int64, strict=False)
        in_range = value.is_between(-(-MIN_MS // factor), MAX_MS // factor)
        millis = pl.when(in_range).then(value * factor)
        hazard = column(name).is_not_null() & ~in_range.fill_null(False)
        return pl.from_epoch(millis, time_unit="ms").dt.to_string(ISO_MILLIS), hazard

    def _message_id(self) -> tuple[pl.Expr, pl.Expr | None]:
        none = pl.lit(None, pl.String)
        name = self.sync.message_id
        if name is None:
            return none, None
        kind = _kind_of(self.schema[name])
        if kind in ("text", "datetime", "date", "time"):
            return self._text(name), None
        if kind == "int":
            return column(name).cast(pl.String), None
        if kind == "null":
            return none, None
        return none, ~self._json_null(name)


def _python_timestamps(texts: pl.Series, sync: SyncSpec) -> list[pl.Series]:
    """`_TS` and `_TS_REASON` from raw text (ISO times) or, with a `timestamp_unit`, from JSON texts (epochs)."""
    stamps: list[str | None] = []
    reasons: list[str | None] = []
    for text in texts.to_list():
        stamp = reason = None
        value = text if sync.timestamp_unit is None or text is None else value_of(text.encode())
        if value is not None:
            try:
                stamp = event_time(value, sync.timestamp or "", sync.timestamp_unit)
            except RowRejected as exc:
                reason = str(exc)
        stamps.append(stamp)
        reasons.append(reason)
    return [pl.Series(_TS, stamps, dtype=pl.String), pl.Series(_TS_REASON, reasons, dtype=pl.String)]


def _message_digests(sync: SyncSpec, sync_uuid: str) -> pl.Expr:
    """The hex SHA-256 that `events.message_id_for` takes each row's messageId from (by polars-hash, off the GIL).

    About half the CPU of hashlib called row by row. Rows whose messageId comes from a column hash nothing.
    """
    parts = [
        pl.lit(sync_uuid),
        pl.col(KEY),
        pl.col(KIND),
        pl.col(BEFORE_GEN).cast(pl.String).fill_null("None"),
        pl.col(BEFORE).fill_null(""),
        pl.col(AFTER).fill_null(""),
    ]
    hashed = pl.concat_str(parts, separator=rules.MESSAGE_ID_SEPARATOR)
    if sync.message_id is not None:  # first deliveries take the column's value
        hashed = pl.when(_uses_message_id_column()).then(pl.lit("")).otherwise(hashed)
    return hashed.chash.sha2_256().alias(_DIGEST)


def _message_ids(sync: SyncSpec) -> pl.Expr:
    """The messageId of each row: the message_id column for added rows when set, else the digest shaped like a UUID."""
    digest = pl.col(_DIGEST)
    generated = pl.concat_str([digest.str.slice(start, digits) for start, digits in rules.UUID_GROUPS], separator="-")
    if sync.message_id is None:
        return generated.alias(_MID)
    return pl.when(_uses_message_id_column()).then(pl.col(_MID)).otherwise(generated).alias(_MID)


def _uses_message_id_column() -> pl.Expr:
    """`events.uses_message_id_column` of each row, for a sync with a message_id column."""
    return (pl.col(KIND) == "added") & pl.col(BEFORE_GEN).is_null()


def _payload(sync: SyncSpec, message_type: str, names: Mapping[str, str | None], described: bool) -> pl.Expr:
    """The message JSON, keys in `build_event`'s order (`described`: changed rows carry `_CHANGES`)."""

    def optional(key: str, value: pl.Expr, encoded: pl.Expr) -> pl.Expr:
        return pl.when(value.is_not_null()).then(pl.concat_str([pl.lit(f',"{key}":'), encoded]))

    parts = [pl.lit('{"type":' + orjson.dumps(message_type).decode())]
    if message_type == "track":
        names_json = {kind: orjson.dumps(name).decode() for kind, name in names.items() if name is not None}
        event = pl.col(KIND).replace_strict(names_json, default=None, return_dtype=pl.String)
        parts.append(pl.concat_str([pl.lit(',"event":'), event]))
    ids = [("userId", _UID, sync.user_id), ("anonymousId", _AID, sync.anonymous_id)]
    ids += [("groupId", _GID, sync.group_id)] if sync.type == "group" else []
    parts += [optional(key, pl.col(alias), _json_text(pl.col(alias))) for key, alias, name in ids if name is not None]
    parts += [
        pl.lit(',"traits":' if sync.type in ("identify", "group") else ',"properties":'),
        _bag_with_changes() if described else pl.col(_BAG),
    ]
    if sync.timestamp is not None:
        parts.append(optional("timestamp", pl.col(_TS), _quoted(pl.col(_TS))))
    mid = pl.col(_MID)
    if sync.message_id is None:  # every row's messageId is made here: a UUID, never null
        parts += [pl.lit(',"messageId":"'), mid, pl.lit('"')]
    else:
        parts.append(optional("messageId", mid, _json_text(mid)))
    parts.append(pl.lit(',"context":'))
    if sync.context_tree:
        context = pl.col(_CONTEXT)
        mapped = pl.concat_str([pl.lit(LIBRARY_JSON[:-1] + ","), context.str.strip_prefix("{")])
        parts.append(pl.when(context == "{}").then(pl.lit(LIBRARY_JSON)).otherwise(mapped))
    else:
        parts.append(pl.lit(LIBRARY_JSON))
    parts += [optional("integrations", pl.col(_INTEGRATIONS), pl.col(_INTEGRATIONS)), pl.lit("}")]
    return pl.concat_str(parts, ignore_nulls=True)


def _bag_with_changes() -> pl.Expr:
    """The properties or traits, with the members that describe a change last (`_CHANGES`, where there is one)."""
    bag, changes = pl.col(_BAG), pl.col(_CHANGES)
    added = pl.concat_str(
        [bag.str.strip_suffix("}"), pl.when(bag != "{}").then(pl.lit(",")), changes, pl.lit("}")], ignore_nulls=True
    )
    return pl.when(changes.is_null()).then(bag).otherwise(added)


def _change_members(sync: SyncSpec) -> pl.Expr:
    """The members that describe each changed row's change (`change_description.change_members`), else null."""

    def members(rows: pl.Series) -> pl.Series:
        kinds, befores, afters = (rows.struct.field(name) for name in (KIND, BEFORE, AFTER))
        changed = (kinds == "changed").fill_null(False)
        described = change_members_column(sync, befores.filter(changed), afters.filter(changed))
        return pl.Series(_CHANGES, [None] * len(rows), dtype=pl.String).scatter(changed.arg_true(), described)

    return pl.struct(KIND, BEFORE, AFTER).map_batches(members, return_dtype=pl.String).alias(_CHANGES)


def _reason(sync: SyncSpec) -> pl.Expr:
    """Why a row is rejected before its size is known, checked in `build_event`'s order (null: not rejected)."""
    reason = pl.when(pl.col(_UID).is_null() & pl.col(_AID).is_null()).then(pl.lit(rules.no_user_id(sync)))
    if sync.type == "group":
        reason = reason.when(pl.col(_GID).is_null()).then(pl.lit(rules.no_group_id(sync)))
    if sync.timestamp is not None:
        reason = reason.when(pl.col(_TS_REASON).is_not_null()).then(pl.col(_TS_REASON))
    if sync.message_id is not None:
        added, mid = _uses_message_id_column(), pl.col(_MID)
        before, after = rules.long_message_id(sync, "\0").split("\0")
        too_long = [pl.lit(before), mid.str.len_chars().cast(pl.String), pl.lit(after)]
        reason = (
            reason.when(added & (mid.is_null() | (mid.str.strip_chars(PY_WHITESPACE) == "")))
            .then(pl.lit(rules.empty_message_id(sync)))
            .when(added & (mid.str.len_chars() > MAX_MESSAGE_ID_CHARS))
            .then(pl.concat_str(too_long))
        )
    return reason.otherwise(pl.lit(None, pl.String))
