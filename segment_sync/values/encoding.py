"""Canonical JSON for warehouse values: what a row's sent columns look like on the wire."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import polars.selectors as cs

from segment_sync.values.json_column import is_json, text_of

_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_INT64 = 2**63
Schema = pl.DataFrame | pl.LazyFrame | Mapping[str, pl.DataType]
Source = Callable[[str], pl.Expr]


def column(name: str) -> pl.Expr:
    """The column with exactly this name (pl.col would read `*` or `^...$` as patterns)."""
    return cs.by_name(name).as_expr()


def normalize_types(frame: pl.DataFrame) -> pl.DataFrame:
    """Put every datetime in UTC (naive means UTC), so sources that label zones differently agree."""
    fixes = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = column(name)
            fixes.append(
                col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            )
    return frame.with_columns(fixes) if fixes else frame


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return orjson.Fragment(format(value, "f") if value == value.to_integral_value() else str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _widen(value: Any) -> Any:
    """Make ints beyond 64 bits, which orjson refuses, go through `_default`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -_INT64 <= value < 2 * _INT64:
        return Decimal(value)
    if isinstance(value, dict):
        return {k: _widen(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_widen(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON: NaN/Infinity as null, Decimal digits kept, datetimes with an offset, bytes as base64."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_widen(value), default=_default, option=_OPTIONS)


def row_contents(frame: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    """One canonical JSON object per row, of the given columns, as a list (see `content_column`)."""
    return content_column(frame, columns).to_list()


def content_column(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """One canonical JSON object per row, of the given columns (already in a stable order)."""
    return frame.select(content_expr(frame.schema, columns).alias("content")).to_series()


def content_expr(schema: Schema, columns: Sequence[str], source: Source = column) -> pl.Expr:
    """An expression giving one canonical JSON object per row, of the given columns (already in a stable order).

    Numbers, decimals, text, booleans, dates, times and JSON columns are encoded by Polars, without a Python
    loop; other values (nested, from dialects read by inference) go through `dumps` value by value. `source`
    gives the expression of a column by name (a struct's fields, say).
    """
    schema = schema_of(schema)
    parts: list[pl.Expr] = []
    for i, name in enumerate(columns):
        key = pl.lit(("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":")
        dtype = schema[name]
        value = json_value(schema, name, source) if is_plain(dtype) else _python_json(json_ready(dtype, name, source))
        parts += [key, value]
    return pl.concat_str([*parts, pl.lit("}")])


def _python_json(values: pl.Expr) -> pl.Expr:
    return values.map_batches(_dumps_values, return_dtype=pl.String, is_elementwise=True)


def _dumps_values(values: pl.Series) -> pl.Series:
    return pl.Series([dumps(value).decode() for value in values.to_list()], dtype=pl.String)


def schema_of(frame: Schema) -> Mapping[str, pl.DataType]:
    """The column types of a frame, a lazy frame or a schema."""
    if isinstance(frame, pl.DataFrame):
        return frame.schema
    if isinstance(frame, pl.LazyFrame):
        return frame.collect_schema()
    return frame


def json_value(schema: Mapping[str, pl.DataType], name: str, source: Source = column) -> pl.Expr:
    """One plain column's values as JSON text."""
    dtype = schema[name]
    if is_json(dtype):
        return text_of(source(name)).fill_null("null")  # the warehouse's own JSON, as it is
    if isinstance(dtype, pl.Decimal):
        return source(name).cast(pl.String).fill_null("null")  # a JSON number with every digit
    if dtype == pl.Boolean or dtype.is_integer():
        return source(name).cast(pl.String).fill_null("null")  # as JSON writes them, 3x cheaper
    if isinstance(dtype, pl.Datetime) or dtype in (pl.Date, pl.Time):  # ISO-8601 text needs no escaping
        return pl.concat_str([pl.lit('"'), json_ready(dtype, name, source), pl.lit('"')]).fill_null("null")
    single = pl.struct(json_ready(dtype, name, source).alias("v")).struct.json_encode()
    return single.str.slice(len('{"v":')).str.strip_suffix("}")


def is_plain(dtype: pl.DataType) -> bool:
    """Whether Polars alone encodes this type's values as JSON (no Python per value)."""
    return (
        is_json(dtype)
        or dtype.is_integer()
        or dtype.is_float()
        or isinstance(dtype, pl.Decimal | pl.Datetime)
        or dtype in (pl.String, pl.Boolean, pl.Date, pl.Time, pl.Null)
    )


def json_ready(dtype: pl.DataType, name: str, source: Source = column) -> pl.Expr:
    """A column's values as JSON encodes them: non-finite floats null, dates and times as ISO-8601 text."""
    # Polars formats dates and times itself: exact (orjson shortens some microseconds) and safe for years
    # Python cannot hold (0, 10000+), which would otherwise fail the whole diff.
    col = source(name)
    if dtype.is_float():
        return pl.when(col.is_finite()).then(col)  # NaN and ±Infinity become null
    if isinstance(dtype, pl.Datetime):
        utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return utc.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
    if dtype == pl.Date:
        return col.dt.to_string("%Y-%m-%d")
    if dtype == pl.Time:
        return col.dt.to_string("%H:%M:%S%.f")
    return col


def key_strings(frame: Schema, key_columns: Sequence[str], *, names: Sequence[str] | None = None) -> pl.Expr:
    """An expression giving each row's primary key as one string (a JSON object for composite keys).

    `names` are the key's names in that JSON object when the columns have been renamed.
    """
    schema = schema_of(frame)
    if len(key_columns) == 1:
        return _key_part(schema, key_columns[0])
    parts = pl.struct([_key_part(schema, c) for c in key_columns])
    return (parts.struct.rename_fields(list(names)) if names else parts).struct.json_encode()


def _key_part(schema: Mapping[str, pl.DataType], name: str) -> pl.Expr:
    dtype = schema[name]
    col = column(name)
    if isinstance(dtype, pl.Datetime):
        return col.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
    return col.cast(pl.String)


def iter_json_lines(lines: Iterable[bytes]) -> Iterable[Any]:
    """Parse JSON lines, stopping at a torn (partly written) last line."""
    for line in lines:
        if not line.endswith(b"\n"):
            return
        yield orjson.loads(line)
