"""PostgreSQL's fast read path: COPY (query) TO STDOUT as CSV through psycopg, parsed by Polars in batches."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import polars as pl
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from segment_sync.error_text import first_line
from segment_sync.spec import ModelSpec
from segment_sync.values.encoding import column
from segment_sync.warehouse.column_types import ReadAs, postgres_read_as, postgres_type_name
from segment_sync.warehouse.warehouse_error import WarehouseError, read_failed, safe_url, without_password

DRIVERS = ("psycopg", "psycopg2")  # URLs whose options are libpq's, so psycopg 3 can take them as they are
MIN_SERVER_VERSION = 140000  # from PostgreSQL 14, extract(epoch ...) is an exact numeric
_EPOCH_MICROS = "(extract(epoch from {}) * 1000000)::int8"


@dataclass(frozen=True)
class CopyColumn:
    """One result column: its name, the SQL that prints it for COPY, and how Polars turns that into its value."""

    name: str
    sql: str
    csv_dtype: pl.DataType
    finish: pl.Expr | None
    read_as: ReadAs


def copy_column(name: str, type_oid: int) -> CopyColumn:
    """How a result column is copied: read as `column_types` says, printed in a form Polars parses exactly."""
    read_as = postgres_read_as(postgres_type_name(type_oid))
    value = read_as.sql.format("q." + '"' + name.replace('"', '""') + '"')
    col, target = column(name), read_as.read
    if target == pl.Boolean:
        return CopyColumn(name, value, pl.String(), (col == "t").alias(name), read_as)
    if target == pl.Date:
        return CopyColumn(name, f"({value}) - date '1970-01-01'", pl.Int32(), col.cast(pl.Date).alias(name), read_as)
    if isinstance(target, pl.Datetime):
        micros = _EPOCH_MICROS.format(value)
        return CopyColumn(name, micros, pl.Int64(), col.cast(target).alias(name), read_as)
    if target == pl.Time:
        micros = _EPOCH_MICROS.format(value)
        return CopyColumn(name, micros, pl.Int64(), (col * 1000).cast(pl.Time).alias(name), read_as)
    return CopyColumn(name, value, target, None, read_as)


def handles(url: str) -> bool:
    """Whether the URL is one psycopg 3 can connect with as it is."""
    return sa.make_url(url).get_driver_name() in DRIVERS


@contextlib.contextmanager
def open_copy(
    url: str, model: ModelSpec, batch_size: int
) -> Iterator[Generator[tuple[pl.DataFrame, dict[str, ReadAs]], None, None] | None]:
    """The model's rows as Polars batches over COPY with the plan they were read by; None when the server is older
    than PostgreSQL 14 or the query returns two columns of one name (the model then uses SQLAlchemy)."""
    query = model.query
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


def batches_on(
    conn: psycopg.Connection, url: str, model: ModelSpec, batch_size: int
) -> Generator[tuple[pl.DataFrame, dict[str, ReadAs]], None, None] | None:
    """The model's rows over COPY on a connection already open (its session's settings apply); None as open_copy."""
    try:
        columns = _plan(conn, model.query)
    except psycopg.Error as exc:
        raise read_failed(model, url, exc) from None
    return None if columns is None else _batches(conn, model.query, columns, batch_size, url, model)


def _connect(url: str) -> psycopg.Connection:
    """Connect with what SQLAlchemy's psycopg dialect would pass for this URL."""
    args, kwargs = PGDialect_psycopg().create_connect_args(sa.make_url(url).set(drivername="postgresql+psycopg"))
    return psycopg.connect(*args, **kwargs)


def _plan(conn: psycopg.Connection, query: str) -> list[CopyColumn] | None:
    if conn.info.server_version < MIN_SERVER_VERSION:
        return None
    conn.execute("set client_encoding to 'UTF8'")
    conn.execute("set time zone 'UTC'")  # how to_jsonb writes instants inside arrays and JSON
    # A server-side cursor describes the result without running the query, and errors read as they do on the
    # SQLAlchemy path, which declares one too.
    with conn.cursor(name="segment_sync_describe") as cur:
        cur.execute(query)
        description = cur.description or []
    names = [c.name for c in description]
    if len(set(names)) != len(names):
        return None
    return [copy_column(c.name, c.type_code) for c in description]


def _batches(
    conn: psycopg.Connection, query: str, columns: list[CopyColumn], batch_size: int, url: str, model: ModelSpec
) -> Generator[tuple[pl.DataFrame, dict[str, ReadAs]], None, None]:
    schema = {c.name: c.csv_dtype for c in columns}
    plan = {c.name: c.read_as for c in columns}
    finish = [c.finish for c in columns if c.finish is not None]
    statement = f"copy (select {', '.join(c.sql for c in columns)} from (\n{query}\n) as q) to stdout (format csv)"

    def parse(data: bytes) -> tuple[pl.DataFrame, dict[str, ReadAs]]:
        # In PostgreSQL's CSV an unquoted empty field is NULL and "" is the empty string, as Polars reads them.
        frame = pl.read_csv(data, has_header=False, schema=schema) if data else pl.DataFrame(schema=schema)
        return frame.with_columns(finish), plan

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
