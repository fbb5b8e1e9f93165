"""Canonical JSON for warehouse values: what a row's sent columns look like on the wire."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import polars.selectors as cs

_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_INT64 = 2**63


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
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
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
    """Compact UTF-8 JSON: NaN/Infinity as null, Decimal digits kept, datetimes with an offset."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_widen(value), default=_default, option=_OPTIONS)


def _parse_int(text: str) -> int | Decimal:
    return int(text) if len(text) < 19 else Decimal(text)


def loads(text: str | bytes) -> Any:
    """Parse canonical JSON (from `dumps`) without losing digits."""
    raw = text.encode() if isinstance(text, str) else text
    fast = orjson.loads(raw)
    # Canonical JSON re-encodes to itself unless a number would lose digits as a float (Decimal, huge int).
    if orjson.dumps(fast, option=_OPTIONS) == raw:
        return fast
    return json.loads(text, parse_float=Decimal, parse_int=_parse_int)


def row_contents(frame: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    """One canonical JSON object per row, of the given columns, as a list (see `content_column`)."""
    return content_column(frame, columns).to_list()


def content_column(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """One canonical JSON object per row, of the given columns (already in a stable order).

    Numbers, decimals, text, booleans, dates and times are encoded by Polars, without a Python loop;
    binary, nested and other values go through `dumps` row by row.
    """
    names = list(columns)
    if not all(_is_plain(frame.schema[n]) for n in names):
        ready = frame.select(_as_json_ready(frame.schema[n], n).alias(n) for n in names)
        rows = [dumps(dict(zip(names, row, strict=True))).decode() for row in ready.iter_rows()]
        return pl.Series("content", rows, pl.String)
    parts: list[pl.Expr] = []
    for i, name in enumerate(names):
        parts += [pl.lit(("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":"), _json_value(frame, name)]
    return frame.select(pl.concat_str([*parts, pl.lit("}")]).alias("content")).to_series()


def _json_value(frame: pl.DataFrame, name: str) -> pl.Expr:
    """One column's values as JSON text."""
    dtype = frame.schema[name]
    if isinstance(dtype, pl.Decimal):
        return column(name).cast(pl.String).fill_null("null")  # a JSON number with every digit
    single = pl.struct(_as_json_ready(dtype, name).alias("v")).struct.json_encode()
    return single.str.slice(len('{"v":')).str.strip_suffix("}")


def _is_plain(dtype: pl.DataType) -> bool:
    if dtype in (pl.Int128, pl.UInt128):
        return False
    return (
        dtype.is_integer()
        or dtype.is_float()
        or isinstance(dtype, pl.Decimal | pl.Datetime)
        or dtype in (pl.String, pl.Boolean, pl.Date, pl.Time, pl.Null)
    )


def _as_json_ready(dtype: pl.DataType, name: str) -> pl.Expr:
    # Polars formats dates and times itself: exact (orjson shortens some microseconds) and safe for years
    # Python cannot hold (0, 10000+), which would otherwise fail the whole diff.
    col = column(name)
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


def key_strings(frame: pl.DataFrame, key_columns: Sequence[str]) -> pl.Expr:
    """An expression giving each row's primary key as one string (a JSON object for composite keys)."""
    if len(key_columns) == 1:
        return _key_part(frame, key_columns[0])
    return pl.struct([_key_part(frame, c) for c in key_columns]).struct.json_encode()


def _key_part(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[name]
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
