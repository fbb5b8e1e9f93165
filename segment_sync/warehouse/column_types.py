"""How each dialect's declared column types are read: the SQL that renders a column, and the Polars type it becomes.

Every read path of a dialect (its fast path and SQLAlchemy) reads a column the same way, decided by the type
the database declares for it, never by the values of one batch. Types Polars holds exactly (integers up to 64
bits, floats of their own width, text, booleans, dates, times, timestamps, decimals up to 38 digits) are read as
they are; everything else (JSON, arrays, structs, maps, unconstrained numerics, intervals, ...) is rendered as
JSON by the warehouse itself (`to_jsonb`, `to_json`, `TO_JSON`, `TO_JSON_STRING`) and sent as that JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from segment_sync.values.json_column import JSON


@dataclass(frozen=True)
class ReadAs:
    """One column's reading: `sql` renders it (`{}` stands for the column), `read` is the Polars type that arrives,
    `final` the type it is stored as (a JSON column, or a timestamp from its epoch)."""

    sql: str
    read: pl.DataType
    final: pl.DataType

    @classmethod
    def plain(cls, dtype: pl.DataType, sql: str = "{}") -> ReadAs:
        """A column that arrives as its final type."""
        return cls(sql, dtype, dtype)

    @classmethod
    def json(cls, sql: str) -> ReadAs:
        """A column the warehouse renders as JSON text."""
        return cls(sql, pl.String(), JSON)


UTC_MICROS = pl.Datetime("us", "UTC")

# --- PostgreSQL (and every PostgreSQL-compatible dialect whose driver reports type oids) ---------------------

_POSTGRES_NON_FINITE = "case when {0}::text in ('NaN', 'Infinity', '-Infinity') then 'NaN' else to_jsonb({0})::text end"
_POSTGRES = {
    "int2": ReadAs.plain(pl.Int64()),
    "int4": ReadAs.plain(pl.Int64()),
    "int8": ReadAs.plain(pl.Int64()),
    "float4": ReadAs.plain(pl.Float32()),
    "float8": ReadAs.plain(pl.Float64()),
    "text": ReadAs.plain(pl.String()),
    "varchar": ReadAs.plain(pl.String()),
    "bpchar": ReadAs.plain(pl.String()),
    "name": ReadAs.plain(pl.String()),
    "uuid": ReadAs.plain(pl.String(), "{}::text"),
    "bool": ReadAs.plain(pl.Boolean()),
    "date": ReadAs.plain(pl.Date()),
    "time": ReadAs.plain(pl.Time()),
    "timestamp": ReadAs.plain(UTC_MICROS),
    "timestamptz": ReadAs.plain(UTC_MICROS),
    "bytea": ReadAs.plain(pl.String(), "translate(encode({}, 'base64'), E'\\n', '')"),
    "numeric": ReadAs.json(_POSTGRES_NON_FINITE),  # every digit, as to_jsonb writes it; NaN and ±Infinity null
}
POSTGRES_OTHER = ReadAs.json("to_jsonb({})::text")


def postgres_type_name(type_oid: int) -> str | None:
    """The name of a built-in PostgreSQL type from its oid (None for the database's own types, such as enums)."""
    import psycopg  # only PostgreSQL models need it: importing it takes 0.1 s of every snapshot step

    info = psycopg.postgres.types.get(type_oid)
    return info.name if info is not None and info.oid == type_oid else None  # not the element type of an array


def postgres_read_as(type_name: str | None) -> ReadAs:
    """How a PostgreSQL column of this type (its `pg_type` name; None for a type the driver does not know) is read."""
    return _POSTGRES.get(type_name or "", POSTGRES_OTHER)


# --- DuckDB ----------------------------------------------------------------------------------------------------

_DUCKDB = {
    "boolean": pl.Boolean(),
    "tinyint": pl.Int8(),
    "smallint": pl.Int16(),
    "integer": pl.Int32(),
    "bigint": pl.Int64(),
    "utinyint": pl.UInt8(),
    "usmallint": pl.UInt16(),
    "uinteger": pl.UInt32(),
    "ubigint": pl.UInt64(),
    "float": pl.Float32(),
    "double": pl.Float64(),
    "date": pl.Date(),
    "time": pl.Time(),
    "timestamp": pl.Datetime("us"),
    "timestamp_ms": pl.Datetime("ms"),
    "timestamp_s": pl.Datetime("ms"),
    "timestamp with time zone": UTC_MICROS,
    '"null"': pl.Null(),
}
_DUCKDB_AS_TEXT = {"uuid": "{}::varchar", "enum": "{}::varchar", "blob": "to_base64({})"}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def duckdb_read_as(type_id: str, type_text: str) -> ReadAs:
    """How a DuckDB column is read, from its type's id (`DuckDBPyType.id`) and full text (`str(type)`)."""
    if type_text == "JSON":  # as stored: to_json would read its numbers as doubles, losing digits past 15
        return ReadAs.json("{}::varchar")
    if type_id == "varchar":
        return ReadAs.plain(pl.String())
    if type_id in _DUCKDB:
        return ReadAs.plain(_DUCKDB[type_id])
    if type_id == "null" or type_text == '"NULL"':
        return ReadAs.plain(pl.Null())
    if type_id == "timestamp_ns":  # Python's datetime (the SQLAlchemy path) holds microseconds: read the epoch
        return ReadAs("epoch_ns({})", pl.Int64(), pl.Datetime("ns"))
    if type_id in _DUCKDB_AS_TEXT:
        return ReadAs.plain(pl.String(), _DUCKDB_AS_TEXT[type_id])
    if type_id == "decimal" and (match := _DECIMAL.fullmatch(type_text)):
        return ReadAs.plain(pl.Decimal(int(match[1]), int(match[2])))
    return ReadAs.json("to_json({})::varchar")  # structs, lists, arrays, maps, unions, hugeints, intervals, ...


# --- Snowflake (type codes of snowflake-connector-python's cursor description) ------------------------------

_SNOWFLAKE_CODES = {
    0: "FIXED",
    1: "REAL",
    2: "TEXT",
    3: "DATE",
    4: "TIMESTAMP",
    5: "VARIANT",
    6: "TIMESTAMP_LTZ",
    7: "TIMESTAMP_TZ",
    8: "TIMESTAMP_NTZ",
    9: "OBJECT",
    10: "ARRAY",
    11: "BINARY",
    12: "TIME",
    13: "BOOLEAN",
    14: "GEOGRAPHY",
    15: "GEOMETRY",
    16: "VECTOR",
}
_SNOWFLAKE = {
    "REAL": ReadAs.plain(pl.Float64()),
    "TEXT": ReadAs.plain(pl.String()),
    "DATE": ReadAs.plain(pl.Date()),
    "TIME": ReadAs.plain(pl.Time()),
    "BOOLEAN": ReadAs.plain(pl.Boolean()),
    "TIMESTAMP": ReadAs.plain(UTC_MICROS),
    "TIMESTAMP_LTZ": ReadAs.plain(UTC_MICROS),
    "TIMESTAMP_TZ": ReadAs.plain(UTC_MICROS),
    "TIMESTAMP_NTZ": ReadAs.plain(UTC_MICROS),
    "BINARY": ReadAs.plain(pl.String(), "BASE64_ENCODE({})"),
}
SNOWFLAKE_OTHER = ReadAs.json("TO_JSON(TO_VARIANT({}))")
SNOWFLAKE_NUMBER = ReadAs.json("TO_VARCHAR({})")  # every digit: through a VARIANT a number may become a double


def snowflake_read_as(type_code: int, precision: int | None, scale: int | None) -> ReadAs:
    """How a Snowflake column is read; NUMBER(p, 0) up to 18 digits is an integer, other numbers JSON numbers."""
    name = _SNOWFLAKE_CODES.get(type_code, "")
    if name == "FIXED":
        if scale == 0 and precision is not None and precision <= 18:
            return ReadAs.plain(pl.Int64())
        return SNOWFLAKE_NUMBER
    return _SNOWFLAKE.get(name, SNOWFLAKE_OTHER)


# --- BigQuery (type names of google-cloud-bigquery's DB-API description) --------------------------------------

_BIGQUERY = {
    "INTEGER": ReadAs.plain(pl.Int64()),
    "INT64": ReadAs.plain(pl.Int64()),
    "FLOAT": ReadAs.plain(pl.Float64()),
    "FLOAT64": ReadAs.plain(pl.Float64()),
    "BOOLEAN": ReadAs.plain(pl.Boolean()),
    "BOOL": ReadAs.plain(pl.Boolean()),
    "STRING": ReadAs.plain(pl.String()),
    "DATE": ReadAs.plain(pl.Date()),
    "TIME": ReadAs.plain(pl.Time()),
    "DATETIME": ReadAs.plain(UTC_MICROS),
    "TIMESTAMP": ReadAs.plain(UTC_MICROS),
    "BYTES": ReadAs.plain(pl.String(), "TO_BASE64({})"),
    # every digit: TO_JSON_STRING quotes numbers a double cannot hold
    "NUMERIC": ReadAs.json("CAST({} AS STRING)"),
    "BIGNUMERIC": ReadAs.json("CAST({} AS STRING)"),
}
BIGQUERY_OTHER = ReadAs.json("TO_JSON_STRING({})")


def bigquery_read_as(type_name: str) -> ReadAs:
    """How a BigQuery column is read; JSON, STRUCT, ARRAY, GEOGRAPHY, INTERVAL, RANGE as TO_JSON_STRING writes them."""
    return _BIGQUERY.get(type_name.upper(), BIGQUERY_OTHER)


def description_plan(dialect: str, description: Sequence[Sequence[Any]]) -> dict[str, ReadAs]:
    """How each column of a DB-API cursor's description is read, for a dialect with declared types."""
    if dialect == "postgresql":
        return {d[0]: postgres_read_as(postgres_type_name(d[1])) for d in description}
    if dialect == "duckdb":
        return {d[0]: duckdb_read_as(str(d[1].id), str(d[1])) for d in description}
    if dialect == "snowflake":
        return {d[0]: snowflake_read_as(d[1], d[4], d[5]) for d in description}
    if dialect == "bigquery":
        return {d[0]: bigquery_read_as(str(d[1])) for d in description}
    raise ValueError(f"no declared column types are known for the {dialect} dialect")


def render(columns: Mapping[str, ReadAs], quote: str = '"', prefix: str = "") -> list[str]:
    """The select list reading each column its way (`prefix` qualifies the column, e.g. `q.`)."""
    items = []
    for name, read_as in columns.items():
        quoted = quote + name.replace(quote, quote * 2) + quote
        expr = read_as.sql.format(prefix + quoted)
        items.append(f"{expr} as {quoted}")
    return items
