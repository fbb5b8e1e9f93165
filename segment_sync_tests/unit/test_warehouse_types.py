"""Snowflake and BigQuery columns read as the README's table says, tested without an account.

Snowflake runs for real on fakesnow (Snowflake's connector over DuckDB); BigQuery's generated SQL is checked
with sqlglot's BigQuery dialect.
"""

from __future__ import annotations

import warnings

import fakesnow
import polars as pl
import pytest
import snowflake.connector
import sqlglot
from sqlglot import exp

from segment_sync.values.json_column import JSON
from segment_sync.warehouse.column_types import (
    BIGQUERY_OTHER,
    SNOWFLAKE_NUMBER,
    SNOWFLAKE_OTHER,
    ReadAs,
    bigquery_read_as,
    description_plan,
    render,
    snowflake_read_as,
)
from segment_sync.warehouse.model_reader import finish_batch
from segment_sync_tests.support.both_builders import identify_sync, payloads_both_ways

SNOWFLAKE_TABLE = """create or replace table t (id int, uid varchar, n number(38, 10), big number(38, 0),
  f float, v variant, o object, a array, b binary, d date, ts timestamp_ntz, tz timestamp_tz, bo boolean, tm time)"""
SNOWFLAKE_ROW = """insert into t select 1, 'u1', 1234567890123456789012345678.0123456789, 1234567890123456789, 0.1,
  parse_json('{"a": [1, 2.50]}'), object_construct('k', 1), array_construct(1, 'two'), to_binary('abc', 'utf-8'),
  '2026-01-01', '2026-01-01 10:00:00.123', '2026-01-01 10:00:00+05', true, '10:11:12'"""


def test_snowflake_columns_are_read_by_their_declared_types_on_fakesnow() -> None:
    with fakesnow.patch(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
        conn = snowflake.connector.connect(database="db1", schema="schema1")
        cursor = conn.cursor()
        cursor.execute(SNOWFLAKE_TABLE)
        cursor.execute(SNOWFLAKE_ROW)
        cursor.execute("select * from (select * from t) as q limit 0")
        plan = description_plan("snowflake", cursor.description)
        assert plan["N"] == plan["BIG"] == SNOWFLAKE_NUMBER and plan["V"] == SNOWFLAKE_OTHER
        query = f"select {', '.join(render(plan, prefix='q.'))} from (select * from t) as q"
        frame = pl.read_database(query, conn, schema_overrides={name: r.read for name, r in plan.items()})
        conn.close()
    snapshot = finish_batch(frame, plan).rename({"ID": "id", "UID": "uid"})
    assert snapshot.schema["V"] == JSON and snapshot.schema["F"] == pl.Float64
    [payload] = payloads_both_ways(
        snapshot, identify_sync(["N", "BIG", "F", "V", "O", "A", "B", "D", "TS", "TZ", "BO", "TM"])
    )[0]
    assert (
        b'"traits":{"N":1234567890123456789012345678.0123456789,"BIG":1234567890123456789,"F":0.1,'
        b'"V":{"a":[1,2.5]},"O":{"k":1},"A":[1,"two"],"B":"YWJj","D":"2026-01-01","TS":"2026-01-01T10:00:00.123Z",'
        b'"TZ":"2026-01-01T05:00:00Z","BO":true,"TM":"10:11:12"}'
    ) in payload


@pytest.mark.parametrize(
    ("code", "precision", "scale", "expected"),
    [
        (0, 18, 0, ReadAs.plain(pl.Int64())),
        (0, 19, 0, SNOWFLAKE_NUMBER),
        (0, 10, 2, SNOWFLAKE_NUMBER),
        (1, None, None, ReadAs.plain(pl.Float64())),
        (9, None, None, SNOWFLAKE_OTHER),
        (14, None, None, SNOWFLAKE_OTHER),  # GEOGRAPHY: GeoJSON
        (16, None, None, SNOWFLAKE_OTHER),  # VECTOR
        (99, None, None, SNOWFLAKE_OTHER),  # a type this version does not know yet
    ],
)
def test_snowflake_type_codes(code: int, precision: int | None, scale: int | None, expected: ReadAs) -> None:
    assert snowflake_read_as(code, precision, scale) == expected


BIGQUERY_TYPES = {
    "INT64": pl.Int64(),
    "FLOAT64": pl.Float64(),
    "BOOL": pl.Boolean(),
    "STRING": pl.String(),
    "BYTES": pl.String(),
    "DATE": pl.Date(),
    "TIME": pl.Time(),
    "DATETIME": pl.Datetime("us", "UTC"),
    "TIMESTAMP": pl.Datetime("us", "UTC"),
    "NUMERIC": JSON,
    "BIGNUMERIC": JSON,
    "JSON": JSON,
    "RECORD": JSON,
    "STRUCT": JSON,
    "ARRAY": JSON,
    "GEOGRAPHY": JSON,
    "INTERVAL": JSON,
    "RANGE": JSON,
}


def test_bigquery_types_and_the_sql_that_reads_them() -> None:
    plan = {name.lower(): bigquery_read_as(name) for name in BIGQUERY_TYPES}
    assert {name.upper(): r.final for name, r in plan.items()} == BIGQUERY_TYPES
    assert plan["json"] == plan["record"] == BIGQUERY_OTHER and plan["numeric"].sql == "CAST({} AS STRING)"
    sql = f"select {', '.join(render(plan, quote='`', prefix='q.'))} from (select * from `d.t`) as q"
    parsed = sqlglot.parse_one(sql, read="bigquery")
    calls = {type(c).__name__: c for c in parsed.find_all(exp.Func)}
    assert "JSONFormat" in calls or "Anonymous" in calls  # TO_JSON_STRING, as sqlglot names it
    written = sqlglot.transpile(sql, read="bigquery", write="bigquery")[0]
    assert written.count("TO_JSON_STRING(") == 7 and "CAST(q.`bignumeric` AS STRING)" in written
    assert "TO_BASE64(q.`bytes`)" in written


def test_snowflake_sql_parses_as_snowflake() -> None:
    plan = {"n": SNOWFLAKE_NUMBER, "v": SNOWFLAKE_OTHER, "b": snowflake_read_as(11, None, None)}
    sql = f"select {', '.join(render(plan, prefix='q.'))} from (select * from t) as q"
    assert sqlglot.transpile(sql, read="snowflake", write="snowflake")[0] == (
        'SELECT TO_CHAR(q."n") AS "n", TO_JSON(TO_VARIANT(q."v")) AS "v", BASE64_ENCODE(q."b") AS "b" '
        "FROM (SELECT * FROM t) AS q"
    )
