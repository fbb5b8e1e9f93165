"""Warehouse rows as Hypothesis strategies: every column type, extremes and nulls, and syncs over them."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from segment_sync.spec import SyncSpec

SYNC_UUID = "0b9d6c1e-4f3a-4c55-9d0e-3c1f2a4b5c6d"
KEY_COLUMN = "id"
SYNC_TYPES = ("track", "audience", "identify", "group")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DECIMAL_MAX = 10**38 - 1
ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati", "America/Adak")
# A zone's offset must not push an instant out of Python's years 1..9999; that case has its own test.
SAFE_MIN, SAFE_MAX = dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30, 23, 59, 59, 999_999)
NS_MIN, NS_MAX = dt.datetime(1678, 1, 1), dt.datetime(2261, 12, 31)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# --- values a warehouse can return -----------------------------------------------------------------------

unicode_chars = st.characters(codec="utf-8")  # any code point but lone surrogates, which Polars strings can't hold
short_texts = st.text(unicode_chars, max_size=12)
special_texts = st.sampled_from(
    ["", " ", " \t\n\r ", "\x00", "\x1f", "\x7f", "\u2028\u2029", "\ufeff", "😀", "👩‍👩‍👧‍👦", "e\u0301", "\U0010ffff"]
    + ['"\\/', "</script>", "null", "NaN", "-Infinity", "1e999", "{}", "[]"]
)
long_texts = st.builds(lambda s, n: (s or "x") * n, short_texts, st.sampled_from([300, 4_000, 9_000, 33_000]))
strings = st.one_of(short_texts, special_texts, short_texts, long_texts)

int64s = st.one_of(
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 2**53 + 1, -(2**53) - 1, 10**18, 10**19 // 2]),
    st.integers(INT64_MIN, INT64_MAX),
)
floats = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
        + [-1.7976931348623157e308, 1e16, 1e-7, 0.1, 2.0**53 + 2, 123456789.123456789]
    ),
    st.floats(),  # NaN, ±inf and subnormals included
)
unscaled_decimals = st.one_of(
    st.sampled_from([0, 1, -1, DECIMAL_MAX, -DECIMAL_MAX, 10**37, 10**18 + 1, 12345678901234567890123456789012345678]),
    st.integers(-DECIMAL_MAX, DECIMAL_MAX),
)
durations = st.one_of(
    st.sampled_from([dt.timedelta(0), dt.timedelta(microseconds=1), dt.timedelta(microseconds=-1)]),
    st.timedeltas(min_value=dt.timedelta(days=-106_000_000), max_value=dt.timedelta(days=106_000_000)),
)
binaries = st.one_of(
    st.binary(max_size=40), st.sampled_from([b"", b"   ", b"\x00", b"\xff\xfe", "😀".encode(), b"\xed\xa0\x80"])
)
times = st.times()
utc_offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
TIMESPECS = ("auto", "minutes", "seconds", "milliseconds", "microseconds")


def _iso(moment: dt.datetime, zone: dt.tzinfo | None, sep: str, timespec: str, zulu: bool) -> str:
    text = moment.replace(tzinfo=zone).isoformat(sep=sep, timespec=timespec)
    return text[:-6] + "Z" if zulu and text.endswith("+00:00") else text


def iso_strings(low: dt.datetime = dt.datetime(2, 1, 1), high: dt.datetime = dt.datetime(9998, 12, 31)):
    """ISO-8601 text a warehouse might hold in a varchar column, with or without an offset."""
    moments = st.datetimes(min_value=low, max_value=high)
    return st.one_of(
        st.builds(
            _iso, moments, st.none() | utc_offsets, st.sampled_from("T "), st.sampled_from(TIMESPECS), st.booleans()
        ),
        st.dates(min_value=low.date(), max_value=high.date()).map(dt.date.isoformat),
    )


def _scaled(unscaled: int, scale: int) -> Decimal:
    """An exact Decimal with `scale` fraction digits (Decimal arithmetic would round to 28 digits)."""
    sign, digits, _ = Decimal(unscaled).as_tuple()
    return Decimal((sign, digits, -scale))


# --- columns and frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A generated warehouse column: its name, kind, Polars dtype and value strategy."""

    name: str
    kind: str
    dtype: Any
    values: st.SearchStrategy[Any] = field(repr=False, compare=False)
    zone: str | None = None
    local: bool = False  # the zone labels wall times (replace_time_zone) rather than converting UTC instants

    def series(self, values: list[Any]) -> pl.Series:
        if self.kind != "datetime" or self.zone is None:
            return pl.Series(self.name, values, dtype=self.dtype)
        naive = pl.Series(self.name, values, dtype=pl.Datetime(self.dtype.time_unit))
        if self.local:
            return naive.dt.replace_time_zone(self.zone, ambiguous="earliest", non_existent="null")
        return naive.dt.replace_time_zone("UTC").dt.convert_time_zone(self.zone)


SIMPLE_KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "int": (pl.Int64, int64s),
    "float": (pl.Float64, floats),
    "str": (pl.String, strings),
    "iso": (pl.String, iso_strings()),
    "bool": (pl.Boolean, st.booleans()),
    "date": (pl.Date, st.dates()),
    "time": (pl.Time, times),
    "duration": (pl.Duration("us"), durations),
    "binary": (pl.Binary, binaries),
    "list": (pl.List(pl.Int64), st.lists(st.none() | int64s, max_size=5)),
    "struct": (
        pl.Struct({"a": pl.Int64, "b": pl.String}),
        st.fixed_dictionaries({"a": st.none() | int64s, "b": st.none() | short_texts}),
    ),
}
KINDS = (*SIMPLE_KINDS, "decimal", "datetime")


@st.composite
def columns(draw: st.DrawFn, name: str) -> Column:
    kind = draw(st.sampled_from(KINDS))
    if kind == "decimal":
        scale = draw(st.sampled_from([0, 2, 9, 18, 30, 38]) | st.integers(0, 38))
        return Column(name, kind, pl.Decimal(38, scale), unscaled_decimals.map(lambda u: _scaled(u, scale)))
    if kind == "datetime":
        unit = draw(st.sampled_from(["us", "ms", "ns"]))
        zone = draw(st.none() | st.sampled_from(ZONES))
        low, high = (NS_MIN, NS_MAX) if unit == "ns" else (SAFE_MIN, SAFE_MAX)
        moments = st.datetimes(min_value=low, max_value=high)
        return Column(name, kind, pl.Datetime(unit, zone), moments, zone, draw(st.booleans()))
    dtype, values = SIMPLE_KINDS[kind]
    return Column(name, kind, dtype, values)


column_names = st.one_of(
    st.sampled_from([f"c{i}" for i in range(8)] + ["Spalte ü", "😀 col", 'quote"d', "back\\slash", "sp ace"]),
    st.text(unicode_chars, min_size=1, max_size=5),
).filter(lambda n: n != KEY_COLUMN)


@dataclass(frozen=True)
class Schema:
    key_kind: str  # "str" or "int"
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [KEY_COLUMN, *(c.name for c in self.columns)]

    def key_series(self, keys: list[Any]) -> pl.Series:
        return pl.Series(KEY_COLUMN, keys, dtype=pl.String if self.key_kind == "str" else pl.Int64)

    def keys(self, max_size: int, min_size: int = 0) -> st.SearchStrategy[list[Any]]:
        values = st.text(unicode_chars, max_size=8) if self.key_kind == "str" else int64s
        return st.lists(values, min_size=min_size, max_size=max_size, unique=True)

    def row(self) -> st.SearchStrategy[dict[str, Any]]:
        # one value in four is null
        return st.fixed_dictionaries({c.name: st.one_of(st.none(), c.values, c.values, c.values) for c in self.columns})

    def frame(self, keys: list[Any], rows: list[dict[str, Any]]) -> pl.DataFrame:
        """The frame as a warehouse returns it (before `finish_batch`)."""
        data = [self.key_series(keys)] + [c.series([r[c.name] for r in rows]) for c in self.columns]
        return pl.DataFrame(data)


@st.composite
def schemas(draw: st.DrawFn, min_columns: int = 1, max_columns: int = 6) -> Schema:
    names = draw(st.lists(column_names, min_size=min_columns, max_size=max_columns, unique=True))
    return Schema(draw(st.sampled_from(["str", "int"])), tuple(draw(columns(n)) for n in names))


def key_text(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


def rows_by_key(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {key_text(r[KEY_COLUMN]): r for r in frame.iter_rows(named=True)}


# --- syncs ---------------------------------------------------------------------------------------------------

event_names = st.text(unicode_chars, min_size=1, max_size=20).filter(str.strip)
field_names = st.one_of(st.sampled_from(["plan", "email", "Plan Name", "ü", "😀", "$set", "a.b"]), short_texts)


def literal_name(name: str) -> str:
    """A property name as `fields` declares it to stay one key: backslashes and dots escaped."""
    return name.replace("\\", "\\\\").replace(".", "\\.")


@st.composite
def syncs(draw: st.DrawFn, sync_type: str, schema: Schema) -> SyncSpec:
    pick = st.sampled_from(schema.names)
    temporal = [c.name for c in schema.columns if c.kind in ("datetime", "date", "iso")]
    ident = st.one_of(st.just(KEY_COLUMN), pick)  # ids are often the primary key
    user_id, anonymous_id = draw(
        st.one_of(st.tuples(ident, st.none()), st.tuples(st.none(), ident), st.tuples(ident, ident))
    )
    if draw(st.booleans()):
        names = st.dictionaries(field_names.filter(bool).map(literal_name), pick, max_size=4)
        fields: dict[str, str] | list[str] = draw(names)
    else:
        fields = draw(st.lists(pick, max_size=4, unique=True))
    spec: dict[str, Any] = {
        "name": "s",
        "model": "m",
        "type": sync_type,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "fields": fields,
        "timestamp": draw(st.one_of(st.none(), st.none(), pick, st.sampled_from(temporal) if temporal else pick)),
        "message_id": draw(st.one_of(st.none(), st.none(), pick)),
    }
    if sync_type == "group":
        spec["group_id"] = draw(ident)
    if sync_type == "track":
        spec["events"] = {kind: draw(event_names) for kind in ("added", "changed", "removed")}
    return SyncSpec(**spec)


@dataclass(frozen=True)
class Case:
    schema: Schema
    new: pl.DataFrame
    old: pl.DataFrame | None
    syncs: tuple[SyncSpec, ...]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    schema = draw(schemas())
    pool = draw(schema.keys(max_size=10, min_size=1))
    # new rows are pool[:end], old rows pool[start:]: keys only in new, in both, and only in old
    start, end = sorted(draw(st.lists(st.integers(0, len(pool)), min_size=2, max_size=2)))
    new_keys = pool[: draw(st.sampled_from([len(pool), end]))]
    new = schema.frame(new_keys, [draw(schema.row()) for _ in new_keys])
    old = None
    if draw(st.booleans()):  # else diff against an empty delivered state: every row is added
        old_keys = pool[start:]
        old = schema.frame(old_keys, [draw(schema.row()) for _ in old_keys])
    return Case(schema, new, old, tuple(draw(syncs(t, schema)) for t in SYNC_TYPES))


# --- mapped syncs: nested names, static values, templates, context, integrations ---------------------------

TARGETS = ["a.x", "a.y", "b", "c.d.e", "c.f", "c\\.d", "g"]  # no two collide
CONTEXT_TARGETS = ["ip", "locale", "traits.email", "traits.name", "groupId"]
json_values = st.recursive(
    st.none() | st.booleans() | int64s | st.floats(allow_nan=False, allow_infinity=False) | short_texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_texts, inner, max_size=3),
    max_leaves=6,
)


def _template(parts: list[tuple[bool, str]]) -> dict[str, str]:
    """A template of literal texts (False) and column references (True)."""
    text = "".join(f"{{{p}}}" if is_column else p.replace("{", "{{").replace("}", "}}") for is_column, p in parts)
    return {"template": text}


def _sources(schema: Schema) -> st.SearchStrategy[Any]:
    referable = [n for n in schema.names if "{" not in n and "}" not in n and n.strip()]
    pick = st.sampled_from(schema.names)
    reference = st.tuples(st.just(True), st.sampled_from(referable)) if referable else st.nothing()
    parts = st.lists(st.one_of(reference, st.tuples(st.just(False), short_texts)), max_size=3)
    return st.one_of(pick, pick, st.builds(lambda v: {"static": v}, json_values), parts.map(_template))


@st.composite
def mapped_syncs(draw: st.DrawFn, sync_type: str, schema: Schema) -> SyncSpec:
    """A sync of `syncs` with nested fields, static values, templates, context, integrations and the options."""
    spec = draw(syncs(sync_type, schema)).model_dump(exclude_defaults=True)
    sources = _sources(schema)
    spec["fields"] = draw(st.dictionaries(st.sampled_from(TARGETS), sources, max_size=5))
    spec["context"] = draw(st.dictionaries(st.sampled_from(CONTEXT_TARGETS), sources, max_size=3))
    integrations = st.just({"All": False, "Mixpanel": True}) | st.sampled_from(schema.names)
    spec["integrations"] = draw(st.none() | integrations)
    spec["omit_nulls"] = draw(st.booleans())
    if spec.get("timestamp") is not None:
        spec["timestamp_unit"] = draw(st.sampled_from([None, "s", "ms"]))
    if sync_type in ("track", "identify"):
        spec["changed_fields"] = draw(st.sampled_from([None, "changed_fields"]))
        spec["previous_values"] = draw(st.sampled_from([None, "previous"]))
    return SyncSpec(**spec)


@st.composite
def mapped_cases(draw: st.DrawFn) -> Case:
    """A case whose syncs use every mapping feature."""
    case = draw(cases())
    return Case(case.schema, case.new, case.old, tuple(draw(mapped_syncs(t, case.schema)) for t in SYNC_TYPES))
