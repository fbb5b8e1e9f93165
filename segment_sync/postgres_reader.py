"""PostgreSQL's fast read path: COPY (query) TO STDOUT as CSV through psycopg, parsed by Polars in batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import polars as pl
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from segment_sync.encoding import column
from segment_sync.errors import first_line
from segment_sync.spec import ModelSpec
from segment_sync.warehouse import WarehouseError, read_failed, safe_url, without_password

DRIVERS = ("psycopg", "psycopg2")  # URLs whose options are libpq's, so psycopg 3 can take them as they are
MIN_SERVER_VERSION = 140000  # from PostgreSQL 14, extract(epoch ...) is an exact numeric
_EPOCH_MICROS = "(extract(epoch from {}) * 1000000)::int8"


@dataclass(frozen=True)
class _Mapping:
    """How one PostgreSQL type travels: the SQL that prints it, how Polars reads that, and the final conversion."""

    sql: str
    csv_dtype: pl.DataType
    finish: Callable[[pl.Expr], pl.Expr] | None = None


# Each gives the dtype and value that psycopg + pl.read_database give (the SQLAlchemy path), checked by the tests.
_MAPPINGS = {
    **dict.fromkeys(["int2", "int4", "int8"], _Mapping("{}", pl.Int64())),
    **dict.fromkeys(["float4", "float8"], _Mapping("{}", pl.Float64())),
    **dict.fromkeys(["text", "varchar", "bpchar", "name", "uuid"], _Mapping("{}", pl.String())),
    "bool": _Mapping("{}", pl.String(), lambda c: c == "t"),
    "date": _Mapping("{} - date '1970-01-01'", pl.Int32(), lambda c: c.cast(pl.Date)),
    "timestamp": _Mapping(_EPOCH_MICROS, pl.Int64(), lambda c: c.cast(pl.Datetime("us", "UTC"))),
    "timestamptz": _Mapping(_EPOCH_MICROS, pl.Int64(), lambda c: c.cast(pl.Datetime("us", "UTC"))),
    "time": _Mapping(_EPOCH_MICROS, pl.Int64(), lambda c: (c * 1000).cast(pl.Time)),
    "bytea": _Mapping("encode({}, 'hex')", pl.String(), lambda c: c.str.decode("hex")),
}
_TYPE_NAMES = {info.oid: info.name for info in psycopg.postgres.types if info.name in {*_MAPPINGS, "numeric"}}


@dataclass(frozen=True)
class CopyColumn:
    """One result column: its name, the SQL that prints it for COPY, and how Polars turns that into its value."""

    name: str
    sql: str
    csv_dtype: pl.DataType
    finish: pl.Expr | None


def copy_column(name: str, type_oid: int, precision: int | None, scale: int | None) -> CopyColumn | None:
    """How a result column is copied, or None when its type has no exact mapping (the model then uses SQLAlchemy)."""
    ref = "q." + '"' + name.replace('"', '""') + '"'
    type_name = _TYPE_NAMES.get(type_oid)
    if type_name == "numeric":
        # numeric(p, s) comes back as Decimal(38, s); NaN, which Polars decimals cannot hold, becomes null.
        if precision is None or scale is None or precision > 38:
            return None
        return CopyColumn(name, f"nullif({ref}, 'NaN')", pl.Decimal(38, scale), None)
    mapping = _MAPPINGS.get(type_name or "")
    if mapping is None:
        return None
    finish = mapping.finish(column(name)).alias(name) if mapping.finish else None
    return CopyColumn(name, mapping.sql.format(ref), mapping.csv_dtype, finish)


def handles(url: str) -> bool:
    """Whether the URL is one psycopg 3 can connect with as it is."""
    return sa.make_url(url).get_driver_name() in DRIVERS


@contextlib.contextmanager
def open_copy(url: str, model: ModelSpec, batch_size: int) -> Iterator[Generator[pl.DataFrame, None, None] | None]:
    """The model's rows as Polars batches over COPY, or None when a column's type needs the SQLAlchemy path."""
    query = model.query.strip().rstrip(";")
    try:
        conn = _connect(url)
    except psycopg.Error as exc:
        raise read_failed(model, url, exc) from None
    try:
        try:
            columns = _plan(conn, query)
        except psycopg.Error as exc:
            raise read_failed(model, url, exc) from None
        if columns is None:
            conn.close()  # the model goes the SQLAlchemy way: don't hold a connection meanwhile
        yield None if columns is None else _batches(conn, query, columns, batch_size, url, model)
    finally:
        conn.close()


def _connect(url: str) -> psycopg.Connection:
    """Connect with what SQLAlchemy's psycopg dialect would pass for this URL."""
    args, kwargs = PGDialect_psycopg().create_connect_args(sa.make_url(url).set(drivername="postgresql+psycopg"))
    return psycopg.connect(*args, **kwargs)


def _plan(conn: psycopg.Connection, query: str) -> list[CopyColumn] | None:
    if conn.info.server_version < MIN_SERVER_VERSION:
        return None
    conn.execute("set client_encoding to 'UTF8'")
    # A server-side cursor describes the result without running the query, and errors read as they do on the
    # SQLAlchemy path, which declares one too.
    with conn.cursor(name="segment_sync_describe") as cur:
        cur.execute(query)
        description = cur.description or []
    names = [c.name for c in description]
    if len(set(names)) != len(names):
        return None
    columns = [copy_column(c.name, c.type_code, c.precision, c.scale) for c in description]
    return None if any(c is None for c in columns) else columns  # type: ignore[return-value]


def _batches(
    conn: psycopg.Connection, query: str, columns: list[CopyColumn], batch_size: int, url: str, model: ModelSpec
) -> Generator[pl.DataFrame, None, None]:
    schema = {c.name: c.csv_dtype for c in columns}
    finish = [c.finish for c in columns if c.finish is not None]
    statement = f"copy (select {', '.join(c.sql for c in columns)} from (\n{query}\n) as q) to stdout (format csv)"

    def parse(data: bytes) -> pl.DataFrame:
        # In PostgreSQL's CSV an unquoted empty field is NULL and "" is the empty string, as Polars reads them.
        frame = pl.read_csv(data, has_header=False, schema=schema) if data else pl.DataFrame(schema=schema)
        return frame.with_columns(finish)

    try:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            buffer, rows, batches = bytearray(), 0, 0
            for row in copy:  # the server sends each row as one message
                buffer += row
                rows += 1
                if rows == batch_size:
                    yield parse(bytes(buffer))
                    buffer, rows, batches = bytearray(), 0, batches + 1
        if rows or not batches:
            yield parse(bytes(buffer))
    except psycopg.Error as exc:
        raise read_failed(model, url, exc) from None
    except pl.exceptions.PolarsError as exc:
        detail = without_password(first_line(exc), url)
        raise WarehouseError(
            f"model {model.name!r}: the COPY output of {safe_url(url)} did not parse ({detail}); "
            "set the warehouse's read_path to sqlalchemy and report this"
        ) from None
