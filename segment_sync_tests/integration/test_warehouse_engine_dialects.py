"""The warehouse engine's SQL on Snowflake and BigQuery, without an account.

Snowflake: the diff and the fold run for real on fakesnow (Snowflake's connector over DuckDB). Snowflake's
SQLAlchemy dialect does not load under SQLAlchemy 2.1, so the statements are rendered by SQLAlchemy's generic
compiler with Snowflake's row hash, and parsed by sqlglot's Snowflake dialect. BigQuery: rendered by its
SQLAlchemy dialect and parsed by sqlglot's BigQuery dialect (never run).
"""

from __future__ import annotations

import warnings

import fakesnow
import pytest
import snowflake.connector
import sqlalchemy as sa
import sqlglot
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.schema import CreateTable
from sqlalchemy_bigquery import BigQueryDialect

from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.warehouse_engine.sql_diff import changes_query
from segment_sync.warehouse_engine.state_tables import StateTables
from segment_sync.warehouse_engine.warehouse_state import fold_statements

MODEL = ModelSpec(name="users", table="users", primary_key="id")
COMPOSITE = ModelSpec(name="users", table="users", primary_key=["org", "id"])
SYNC = SyncSpec(name="traits", model="users", type="identify", user_id="user_id", fields=["email", "plan"])
TABLES = StateTables("segment_sync")


class SnowflakeSQL(DefaultDialect):
    """SQLAlchemy's generic SQL, named snowflake so the engine's constructs render Snowflake's functions."""

    name = "snowflake"


def rendered(statement: sa.Executable, dialect: sa.Dialect) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def statements() -> list[sa.Executable]:
    return [
        *(CreateTable(t) for t in TABLES.metadata.sorted_tables),
        changes_query(TABLES, SYNC, MODEL, trust_hashes=True),
        changes_query(TABLES, SYNC, COMPOSITE, trust_hashes=True),
        *fold_statements(TABLES, SYNC.name),
    ]


@pytest.mark.parametrize(("dialect", "read"), [(SnowflakeSQL(), "snowflake"), (BigQueryDialect(), "bigquery")])
def test_every_statement_parses_in_the_dialect(dialect: sa.Dialect, read: str) -> None:
    for statement in statements():
        sql = rendered(statement, dialect)
        assert sqlglot.parse_one(sql, read=read) is not None, sql
    diff = rendered(changes_query(TABLES, SYNC, MODEL, trust_hashes=True), dialect)
    assert ("HASH(" in diff) if read == "snowflake" else ("FARM_FINGERPRINT(" in diff)


def test_the_diff_and_the_fold_run_on_fakesnow() -> None:
    dialect = SnowflakeSQL()
    with fakesnow.patch(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
        conn = snowflake.connector.connect(database="db1", schema="segment_sync")
        cursor = conn.cursor()

        def run(statement: sa.Executable | str) -> list[tuple]:
            cursor.execute(statement if isinstance(statement, str) else rendered(statement, dialect))
            return cursor.fetchall() if cursor.description else []

        run("create schema if not exists segment_sync")
        for table in TABLES.metadata.sorted_tables:
            run(CreateTable(table))
        run("create table segment_sync.snapshot__users (id int, user_id varchar, email varchar, plan varchar)")
        run("insert into segment_sync.snapshot__users values (1, 'u1', 'a@x', 'free'), (2, 'u2', 'b@x', 'pro')")
        first = run(changes_query(TABLES, SYNC, MODEL, trust_hashes=True))
        assert sorted((k, kind) for k, kind, _ in first) == [("1", "added"), ("2", "added")]
        hashes = {k: h for k, _, h in first}
        for seq, key in enumerate(("1", "2")):  # as delivery journals the acknowledged rows
            run(f"insert into segment_sync.journal values ('traits', {seq}, '{key}', '{{}}', 1, {hashes[key]})")
        run(f"insert into segment_sync.journal values ('traits', 2, '2', '{{\"v\":2}}', 1, {hashes['2']})")
        for statement in fold_statements(TABLES, SYNC.name):
            run(statement)
        assert sorted(run("select key, content from segment_sync.delivered")) == [("1", "{}"), ("2", '{"v":2}')]
        assert run("select count(*) from segment_sync.journal") == [(0,)]

        assert run(changes_query(TABLES, SYNC, MODEL, trust_hashes=True)) == []
        run("update segment_sync.snapshot__users set plan = 'team' where id = 1")
        run("delete from segment_sync.snapshot__users where id = 2")
        run("insert into segment_sync.snapshot__users values (3, 'u3', 'c@x', 'free')")
        again = run(changes_query(TABLES, SYNC, MODEL, trust_hashes=True))
        assert sorted((k, kind) for k, kind, _ in again) == [("1", "changed"), ("2", "removed"), ("3", "added")]

        run(
            "create table segment_sync.snapshot__orgs (org varchar, id int, user_id varchar, email varchar,"
            " plan varchar)"
        )
        run(
            """insert into segment_sync.snapshot__orgs values ('a"c', 1, 'u1', 'a@x', 'free'),"""
            " (null, 2, 'u2', 'b', 'p')"
        )
        orgs = ModelSpec(name="orgs", table="orgs", primary_key=["org", "id"])
        composite = run(changes_query(TABLES, SYNC.model_copy(update={"name": "orgs"}), orgs, trust_hashes=True))
        assert [(k, kind) for k, kind, _ in composite] == [('{"org":"a\\"c","id":"1"}', "added")]
        conn.close()


def test_a_composite_key_on_a_dialect_without_json_quoting_is_a_compile_error() -> None:
    with pytest.raises(sa.exc.CompileError, match="cannot key rows by a composite key on sqlite"):
        rendered(changes_query(TABLES, SYNC, COMPOSITE, trust_hashes=True), sqlite.dialect())
