"""The fast read paths give what the SQLAlchemy path gives, on a real DuckDB file and the real PostgreSQL."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segment_sync.spec import ModelSpec
from segment_sync.values.json_column import JSON, text_of
from segment_sync.warehouse.model_reader import read_model, read_model_batches
from segment_sync.warehouse.warehouse_error import WarehouseError
from segment_sync_tests.support.warehouses import Warehouse

AWKWARD_TEXT = ["", "ü😀 naïve", 'say "hi", then leave', "two\nlines\r\nand a tab\t", "\\N", " padded ", "NULL"]


def _model(sql: str) -> ModelSpec:
    return ModelSpec(name="m", sql=sql, primary_key="id")


def _both_paths(url: str, sql: str, batch_size: int = 3) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """The model read through SQLAlchemy and through `auto`, and the path `auto` took."""
    model = _model(sql)
    slow = read_model(url, model, batch_size=batch_size, read_path="sqlalchemy")
    with read_model_batches(url, model, batch_size=batch_size) as batches:
        frames = list(batches)
        path = batches.path
    assert all(frame.schema == frames[0].schema for frame in frames), "every fast batch has the same schema"
    return slow, pl.concat(frames), path


@pytest.fixture
def duck(duckdb_warehouse: Warehouse) -> Warehouse:
    with duckdb.connect(duckdb_warehouse.url.removeprefix("duckdb:///")) as conn:
        conn.execute(
            """create table t as select * from (values
            (1, 1::tinyint, 2::bigint, 1.5::float, 'nan'::double, 12345678901234567890.123456789::decimal(38, 9),
             -0.05::decimal(10, 2), true, date '2026-03-01', timestamp '2026-03-01 10:00:00.123456',
             timestamptz '2026-03-01 10:00:00+05', time '10:11:12.5', 'b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b'::uuid,
             'abc'::blob, [1, 2], {'a': 1}, 'x'),
            (2, null, null, null, 'inf'::double, null, null, null, null, null, null, null, null, null, null, null,
             null),
            (3, (-128)::tinyint, (-9223372036854775808)::bigint, -1e30::float, '-inf'::double,
             -99999999999999999999999999999.999999999::decimal(38, 9), 0::decimal(10, 2), false, date '1900-01-01',
             timestamp '1969-12-31 23:59:59.999999', timestamptz '1999-12-31 23:00:00-08', time '00:00:00',
             '00000000-0000-0000-0000-000000000000'::uuid, ''::blob, [], {'a': null}, '')
            ) v(id, tiny, big, f4, f8, dec, money, flag, day, naive, aware, clock, uid, raw, list, nested, txt)"""
        )
        rows = ", ".join(f"({10 + i}, '{t.replace(chr(39), chr(39) * 2)}')" for i, t in enumerate(AWKWARD_TEXT))
        conn.execute(f"create table words as select * from (values {rows}) v(id, word)")
    return duckdb_warehouse


def test_duckdb_native_path_matches_sqlalchemy(duck):
    slow, fast, path = _both_paths(duck.url, "select * from t order by id")
    assert path == "duckdb_arrow"
    assert_frame_equal(fast, slow)
    assert fast.schema["aware"] == pl.Datetime("us", "UTC") and fast.schema["naive"] == pl.Datetime("us", "UTC")
    assert fast["dec"][2] == slow["dec"][2] and str(fast["dec"][0]) == "12345678901234567890.123456789"


def test_duckdb_text_survives_quotes_newlines_and_unicode(duck):
    slow, fast, _ = _both_paths(duck.url, "select * from words order by id")
    assert_frame_equal(fast, slow)
    assert fast["word"].to_list() == AWKWARD_TEXT


def test_duckdb_empty_result_keeps_the_column_types(duck):
    slow, fast, _ = _both_paths(duck.url, "select * from t where id < 0")
    assert fast.height == 0 and fast.schema == slow.schema
    assert fast.schema["naive"] == pl.Datetime("us", "UTC")


def test_duckdb_file_already_open_for_writing_in_this_process(duck):
    writer = duckdb.connect(duck.url.removeprefix("duckdb:///"))
    try:
        assert read_model(duck.url, _model("select id from t order by id"))["id"].to_list() == [1, 2, 3]
    finally:
        writer.close()


def test_duckdb_url_options_go_through_sqlalchemy(duck):
    with read_model_batches(duck.url + "?threads=1", _model("select id from t")) as batches:
        assert batches.path == "sqlalchemy"
        assert sum(f.height for f in batches) == 3


def test_duckdb_interval_arrives_as_duckdbs_json(duck):
    slow, fast, path = _both_paths(duck.url, "select 1 as id, interval 1 day as gap")
    assert path == "duckdb_arrow"
    assert_frame_equal(fast, slow)
    assert fast.schema["gap"] == JSON and text_of(fast["gap"]).to_list() == ['"1 day"']


def _errors_on_both_paths(url: str, sql: str) -> list[str]:
    """The error a query raises through the SQLAlchemy path and through the fast path."""
    messages = []
    for read_path in ("sqlalchemy", "auto"):
        with pytest.raises(WarehouseError) as caught:
            read_model(url, _model(sql), read_path=read_path)
        messages.append(str(caught.value))
    return messages


@pytest.mark.parametrize(
    "sql", ["select * from nope", "selec 1", "select id, missing_column from t"], ids=["table", "syntax", "column"]
)
def test_duckdb_errors_read_the_same_on_both_paths(duck, sql):
    messages = _errors_on_both_paths(duck.url, sql)
    assert messages[0] == messages[1]
    assert (
        messages[0].startswith("model 'm': reading from duckdb:///") and "Check that the warehouse is up" in messages[0]
    )


def _pg_seed(pg: Warehouse) -> None:
    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    pg.execute(
        "create table t (id int4 primary key, small int2, big int8, f4 float4, f8 float8, dec numeric(38, 9), "
        "money numeric(10, 2), flag bool, day date, naive timestamp, aware timestamptz, clock time, uid uuid, "
        "raw bytea, label varchar(20), code char(4))",
        "insert into t values "
        "(1, 1, 2, 1.1, 'NaN', 12345678901234567890.123456789, -0.05, true, '2026-03-01', "
        "'2026-03-01 10:00:00.123456', '2026-03-01 10:00:00+05', '10:11:12.5', "
        "'b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b', 'abc', 'x', 'ab'),"
        "(2, null, null, null, 'Infinity', null, null, null, null, null, null, null, null, null, null, null),"
        "(3, -32768, -9223372036854775808, 3.4028235e38, '-Infinity', -99999999999999999999999999999.999999999, 0, "
        "false, '1900-01-01', '1969-12-31 23:59:59.999999', '1999-12-31 23:00:00-08', '00:00:00', "
        "'00000000-0000-0000-0000-000000000000', '', '', ''),"
        "(4, 7, 1, 1e-38, 5e-324, 0.000000001, 99999999.99, true, '2400-02-29', '2262-04-11 23:47:16.854775', "
        "'1970-01-01 00:00:00+00', '23:59:59.999999', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\\x00ff', 'ü😀', 'é')",
        "create table words (id int4, word text, line varchar(200))",
        f"insert into words values {', '.join(f'({i}, {quote(t)}, {quote(t)})' for i, t in enumerate(AWKWARD_TEXT))},"
        " (99, null, null)",
    )


@pytest.mark.postgres
def test_postgres_copy_path_matches_sqlalchemy(postgres_warehouse):
    _pg_seed(postgres_warehouse)
    slow, fast, path = _both_paths(postgres_warehouse.url, "select * from t order by id")
    assert path == "postgres_copy"
    assert_frame_equal(fast, slow)
    assert fast.schema["dec"] == JSON and fast.schema["uid"] == pl.String and fast.schema["f4"] == pl.Float32
    assert text_of(fast["dec"]).to_list()[0] == "12345678901234567890.123456789"


@pytest.mark.postgres
def test_postgres_text_keeps_nulls_apart_from_empty_strings(postgres_warehouse):
    _pg_seed(postgres_warehouse)
    sql = 'select id, word, line as "Line ""quoted"", x" from words order by id'
    slow, fast, path = _both_paths(postgres_warehouse.url, sql)
    assert path == "postgres_copy"
    assert_frame_equal(fast, slow)
    assert fast["word"].to_list() == [*AWKWARD_TEXT, None] and fast.columns[2] == 'Line "quoted", x'


@pytest.mark.postgres
def test_postgres_session_time_zone_does_not_shift_values(postgres_warehouse):
    _pg_seed(postgres_warehouse)
    url = postgres_warehouse.url.replace("options=", "options=-cTimeZone%3DAsia%2FKolkata%20")
    sql = "select id, naive, aware, aware::date as local_day, now()::date - now()::date as zero from t order by id"
    slow, fast, path = _both_paths(url, sql)
    assert path == "postgres_copy"
    assert_frame_equal(fast, slow)
    assert str(fast["aware"][0]) == "2026-03-01 05:00:00+00:00"


@pytest.mark.postgres
def test_postgres_empty_result_and_computed_columns(postgres_warehouse):
    _pg_seed(postgres_warehouse)
    slow, fast, path = _both_paths(postgres_warehouse.url, "select id, dec * 2 as doubled from t where id < 0")
    assert path == "postgres_copy" and fast.schema == slow.schema == pl.Schema({"id": pl.Int64, "doubled": JSON})
    _, fast, path = _both_paths(postgres_warehouse.url, "select id, day, flag from t where false;")
    assert path == "postgres_copy" and fast.height == 0
    assert fast.schema == pl.Schema({"id": pl.Int64, "day": pl.Date, "flag": pl.Boolean})


@pytest.mark.postgres
@pytest.mark.parametrize("column", ["'{\"a\": 1}'::jsonb", "array[1, 2]", "interval '1 day'", "'a'::\"char\""])
def test_postgres_types_polars_cannot_hold_arrive_as_to_jsonb_writes_them(postgres_warehouse, column):
    slow, fast, path = _both_paths(postgres_warehouse.url, f"select 1 as id, {column} as v")
    assert path == "postgres_copy"
    assert_frame_equal(fast, slow)
    assert fast.schema["v"] == JSON


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql", ["select * from nope", "selec 1", "select 1/0 as id"], ids=["table", "syntax", "division"]
)
def test_postgres_errors_read_the_same_on_both_paths(postgres_warehouse, sql):
    messages = _errors_on_both_paths(postgres_warehouse.url, sql)
    assert messages[0] == messages[1]


@pytest.mark.parametrize("read_path", ["sqlalchemy", "auto"])
def test_postgres_down_hides_the_password(read_path):
    url = "postgresql+psycopg://sync:s3cret-pw@127.0.0.1:1/analytics"
    with pytest.raises(WarehouseError) as caught:
        read_model(url, _model("select 1 as id"), read_path=read_path)
    message = str(caught.value)
    assert message.startswith("model 'm': reading from postgresql+psycopg://sync:***@127.0.0.1:1/analytics failed:")
    assert "s3cret-pw" not in message and "Check that the warehouse is up" in message


@pytest.mark.parametrize("url", ["postgresql+psycopg://sync:s3cret-pw@host:notaport/db", "s3cret-pw@nowhere"])
def test_unusable_url_hides_the_password(url):
    for read_path in ("sqlalchemy", "auto"):
        with pytest.raises(WarehouseError, match="the warehouse URL is not usable") as caught:
            read_model(url, _model("select 1 as id"), read_path=read_path)
        assert "s3cret-pw" not in str(caught.value)


def test_sqlite_has_no_fast_path(sqlite_warehouse):
    sqlite_warehouse.execute("create table t (id integer, v text)", "insert into t values (1, 'a'), (2, null)")
    with read_model_batches(sqlite_warehouse.url, _model("select * from t")) as batches:
        assert batches.path == "sqlalchemy"
        assert pl.concat(batches).rows() == [(1, "a"), (2, None)]


def test_sqlalchemy_batches_may_differ_and_read_model_relaxes_them(sqlite_warehouse):
    sqlite_warehouse.execute("create table t (id integer, v text)", "insert into t values (1, null), (2, 'b')")
    with read_model_batches(sqlite_warehouse.url, _model("select * from t order by id"), batch_size=1) as batches:
        schemas = [frame.schema["v"] for frame in batches]
    assert schemas == [pl.Null, pl.String]
    assert (
        read_model(sqlite_warehouse.url, _model("select * from t order by id"), batch_size=1).schema["v"] == pl.String
    )


def test_unknown_read_path_is_refused(sqlite_warehouse):
    with pytest.raises(ValueError, match="use 'auto' or 'sqlalchemy'"):
        read_model(sqlite_warehouse.url, _model("select 1 as id"), read_path="fast")  # type: ignore[arg-type]
