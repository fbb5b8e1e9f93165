"""Every value arrives as the warehouse renders it: the same events from every read path and both event builders."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_sync.diff.keyed_diff import UNCHANGED, compute_diff, delivered_rows
from segment_sync.events.frame_builder import PAYLOAD, build_event_frame
from segment_sync.spec import ModelSpec
from segment_sync.values.json_column import JSON
from segment_sync.values.row_columns import KIND
from segment_sync.warehouse.model_reader import read_model_batches
from segment_sync_tests.support.both_builders import identify_sync, payloads_both_ways
from segment_sync_tests.support.warehouse_rows import SYNC_UUID
from segment_sync_tests.support.warehouses import Warehouse

PG_CORPUS = """
create type mood as enum ('calm', 'busy');
create table corpus (
  id int4 primary key, uid text, j json, jb jsonb, n numeric, n38 numeric(38, 9), r real, d8 float8,
  big int8, at timestamptz, naive timestamp, day date, clock time, u uuid, ints int4[], stamps timestamptz[],
  words text[], raw bytea, gap interval, m mood
);
insert into corpus values
 (1, 'u1', '{"b": 1, "a": [1, 2.50, 1e-20, 123456789012345678901234567890]}', '{"x": {"y": true}, "k": "v"}',
  123456789012345678901234567890123456789, 12345678901234567890.123456789, 0.1, 0.1,
  9223372036854775807, '2026-03-01 10:00:00.123456+05', '2026-03-01 10:00:00.5', '2026-03-01', '10:11:12.5',
  'b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b', '{1,2,3}', '{"2026-01-01 00:00:00+00","1999-12-31 23:00:00-08"}',
  '{"a","b \\"q\\""}', '\\x00ff10', '1 day 02:00:00', 'calm'),
 (2, 'u2', '[1, "two", null]', '3', 1234567890123456789.5, -0.000000001, 'NaN', 'Infinity',
  -9223372036854775808, null, null, null, null, null, '{}', '{}', '{}', '', null, null),
 (3, 'u3', 'true', '"text"', 1e-20, null, 3.4028235e38, '-Infinity', 0, '1970-01-01 00:00:00+00',
  '1969-12-31 23:59:59.999999', '0001-01-01', '00:00:00', null, null, null, null, null, '-1 mons', 'busy'),
 (4, 'u4', null, 'null', 'NaN', 0, null, 5e-324, null, null, null, null, null, null, '{null,4}', null, null, null,
  null, null);
"""
PG_COLUMNS = ["j", "jb", "n", "n38", "r", "d8", "big", "at", "naive", "day", "clock", "u", "ints", "stamps", "words"]
PG_COLUMNS += ["raw", "gap", "m"]

DUCK_CORPUS = """
create type mood as enum ('calm', 'busy');
create table corpus as select * from (values
 (1, 'u1', '{"b":1,"a":[1,2.50,1e-20,123456789012345678901234567890]}'::json, {'x': 1.5::decimal(18, 3), 'y': [1]},
  [1.5::float, 'nan'::float], map {'k': 1}, 1234567890123456789012345678.0123456789::decimal(38, 10),
  170141183460469231731687303715884105727::hugeint, 18446744073709551615::ubigint, 0.1::float, 'nan'::double,
  'abc\\x00'::blob, interval 1 day, 'b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b'::uuid,
  timestamp_ns '2026-03-01 10:00:00.123456789', timestamptz '2026-03-01 10:00:00+05', 'calm'::mood),
 (2, 'u2', '[1,"two",null]'::json, {'x': null, 'y': []}, [], map {}, -0.0000000001::decimal(38, 10),
  (-170141183460469231731687303715884105727)::hugeint, 0::ubigint, null, 'inf'::double, ''::blob, null, null,
  null, null, null),
 (3, 'u3', '3'::json, null, null, null, null, null, null, 16777216::float, '-inf'::double, null,
  interval 3 month, null, null, null, 'busy'::mood)
) v(id, uid, j, s, l, mp, d38, h, ub, f4, f8, b, gap, u, ns, aware, m)
"""
DUCK_COLUMNS = ["j", "s", "l", "mp", "d38", "h", "ub", "f4", "f8", "b", "gap", "u", "ns", "aware", "m"]


def _read(url: str, sql: str, read_path: str, batch_size: int = 1) -> tuple[pl.DataFrame, str, dict[str, int]]:
    model = ModelSpec(name="m", sql=sql, primary_key="id")
    with read_model_batches(url, model, batch_size=batch_size, read_path=read_path) as batches:  # type: ignore[arg-type]
        frames = list(batches)
        path = batches.path
    if path != "sqlalchemy" or "sqlite" not in url:
        assert all(f.schema == frames[0].schema for f in frames), "the declared types, whatever a batch holds"
    return pl.concat(frames, how="vertical_relaxed"), path, dict(batches.non_finite)


def _all_events(url: str, sql: str, columns: list[str], paths: dict[str, str]) -> tuple[list[bytes], dict[str, int]]:
    """Events of the model read by each path and built by each builder, asserted byte-identical; and the count of
    NaN and ±Infinity values per column."""
    seen: list[list[bytes]] = []
    counts = {}
    for read_path, expected_path in paths.items():
        for batch_size in (1, 1000):
            snapshot, path, non_finite = _read(url, sql, read_path, batch_size)
            assert path == expected_path
            counts[read_path] = non_finite
            seen += payloads_both_ways(snapshot, identify_sync(columns))
    for other in seen[1:]:
        assert other == seen[0]
    assert counts["auto"] == counts["sqlalchemy"]
    return seen[0], counts["auto"]


def _raw_traits(payload: bytes) -> str:
    return payload.split(b'"traits":', 1)[1].split(b',"messageId"', 1)[0].decode()


@pytest.mark.postgres
def test_postgres_values_arrive_as_to_jsonb_renders_them_on_every_path(postgres_warehouse: Warehouse) -> None:
    postgres_warehouse.execute(*[s for s in PG_CORPUS.split(";\n") if s.strip()])
    payloads, non_finite = _all_events(
        postgres_warehouse.url,
        "select * from corpus order by id",
        PG_COLUMNS,
        {"auto": "postgres_copy", "sqlalchemy": "sqlalchemy"},
    )
    first, second, third, fourth = (_raw_traits(p) for p in payloads)
    assert first == (
        '{"j":{"a":[1,2.50,0.00000000000000000001,123456789012345678901234567890],"b":1},'
        '"jb":{"k":"v","x":{"y":true}},"n":123456789012345678901234567890123456789,'
        '"n38":12345678901234567890.123456789,"r":0.1,"d8":0.1,"big":9223372036854775807,'
        '"at":"2026-03-01T05:00:00.123456Z","naive":"2026-03-01T10:00:00.500Z","day":"2026-03-01",'
        '"clock":"10:11:12.500","u":"b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b","ints":[1,2,3],'
        '"stamps":["2026-01-01T00:00:00+00:00","2000-01-01T07:00:00+00:00"],"words":["a","b \\"q\\""],'
        '"raw":"AP8Q","gap":"1 day 02:00:00","m":"calm"}'
    )
    assert '"j":[1,"two",null],"jb":3,"n":1234567890123456789.5,"n38":-0.000000001,"r":null,"d8":null' in second
    assert '"big":-9223372036854775808' in second and '"ints":[],"stamps":[],"words":[],"raw":""' in second
    assert '"j":true,"jb":"text","n":0.00000000000000000001' in third and '"r":3.4028235e+38' in third
    assert '"day":"0001-01-01"' in third and '"gap":"-1 mons"' in third
    assert '"j":null,"jb":null,"n":null' in fourth and '"d8":5e-324' in fourth and '"ints":[null,4]' in fourth
    assert non_finite == {"r": 1, "d8": 2, "n": 1}


def test_duckdb_values_arrive_as_to_json_renders_them_on_every_path(duckdb_warehouse: Warehouse) -> None:
    with duckdb.connect(duckdb_warehouse.url.removeprefix("duckdb:///")) as conn:
        conn.execute(DUCK_CORPUS)
    payloads, non_finite = _all_events(
        duckdb_warehouse.url,
        "select * from corpus order by id",
        DUCK_COLUMNS,
        {"auto": "duckdb_arrow", "sqlalchemy": "sqlalchemy"},
    )
    first, second, third = (_raw_traits(p) for p in payloads)
    assert first == (
        '{"j":{"b":1,"a":[1,2.50,1e-20,123456789012345678901234567890]},"s":{"x":1.500,"y":[1]},"l":[1.5,null],'
        '"mp":{"k":1},"d38":1234567890123456789012345678.0123456789,"h":170141183460469231731687303715884105727,'
        '"ub":18446744073709551615,"f4":0.1,"f8":null,"b":"YWJjAA==","gap":"1 day",'
        '"u":"b7a6f1f0-1c5e-4a3b-9a55-0e8c2d3f4a5b","ns":"2026-03-01T10:00:00.123456789Z",'
        '"aware":"2026-03-01T05:00:00Z","m":"calm"}'
    )
    assert '"j":[1,"two",null],"s":{"x":null,"y":[]},"l":[],"mp":{},"d38":-0.0000000001' in second
    assert '"h":-170141183460469231731687303715884105727,"ub":0' in second and '"b":""' in second
    assert '"j":3,"s":null' in third and '"f4":16777216.0' in third and '"gap":"3 months"' in third
    assert non_finite == {"l": 1, "f8": 3}


@pytest.mark.postgres
def test_a_key_added_inside_one_rows_json_changes_that_row_only(postgres_warehouse: Warehouse) -> None:
    postgres_warehouse.execute(
        "create table m (id int4, uid text, props jsonb)",
        """insert into m values (1, 'a', '{"plan": "pro"}'), (2, 'b', '[1, 2]'), (3, 'c', '7'), (4, 'd', null)""",
    )
    sync = identify_sync(["props"])
    before, _, _ = _read(postgres_warehouse.url, "select * from m", "auto", 1000)
    state = delivered_rows(before, ["id"], sync.sent_columns, 1).lazy()
    postgres_warehouse.execute("""update m set props = '{"plan": "pro", "seats": 3}' where id = 1""")
    after, _, _ = _read(postgres_warehouse.url, "select * from m", "auto", 1000)
    diff = compute_diff(after, ["id"], sync.sent_columns, state).filter(pl.col(KIND) != UNCHANGED).collect()
    assert diff.select("_key", KIND).rows() == [("1", "changed")]
    event = build_event_frame(sync, diff, SYNC_UUID, initial=False)[PAYLOAD][0]
    assert b'"traits":{"props":{"plan":"pro","seats":3}}' in event


def test_an_all_null_batch_reads_as_the_declared_type(duckdb_warehouse: Warehouse) -> None:
    with duckdb.connect(duckdb_warehouse.url.removeprefix("duckdb:///")) as conn:
        conn.execute("create table m as select * from (values (1, null::json), (2, null), (3, '{\"a\":1}')) v(id, j)")
    for read_path in ("auto", "sqlalchemy"):
        snapshot, _, _ = _read(duckdb_warehouse.url, "select * from m order by id", read_path, 1)
        assert snapshot.schema["j"] == JSON


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-(10**20), max_value=10**20)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _load_both(
    postgres: Warehouse, duck: Warehouse, rows: list[dict[str, Any]], columns: dict[str, tuple[str, str, str]]
) -> list[tuple[str, dict[str, str]]]:
    """Table `h` (id, uid and `columns`: name -> (PostgreSQL value, PostgreSQL type, DuckDB type)) in both
    warehouses, holding `rows`; each warehouse's URL with the read paths expected of it."""
    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(sa.text("drop table if exists h"))
        types = "".join(f", {name} {pg}" for name, (_, pg, _) in columns.items())
        conn.execute(sa.text(f"create table h (id int4, uid text{types})"))
        values = "".join(f", {value}" for value, _, _ in columns.values())
        conn.execute(sa.text(f"insert into h values (:id, :uid{values})"), rows)
    engine.dispose()
    with duckdb.connect(duck.url.removeprefix("duckdb:///")) as conn:
        types = "".join(f", {name} {dd}" for name, (_, _, dd) in columns.items())
        conn.execute(f"create or replace table h (id int, uid varchar{types})")
        marks = ", ".join("?" * (2 + len(columns)))
        conn.executemany(f"insert into h values ({marks})", [tuple(row.values()) for row in rows])
    return [
        (postgres.url, {"auto": "postgres_copy", "sqlalchemy": "sqlalchemy"}),
        (duck.url, {"auto": "duckdb_arrow", "sqlalchemy": "sqlalchemy"}),
    ]


def _json_text(value: Any) -> str:
    """JSON text of a value whose decimals are written with every digit."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    return format(value, "f") if isinstance(value, Decimal) else json.dumps(value)


@pytest.mark.postgres
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_JSON, min_size=1, max_size=5))
def test_any_json_arrives_with_the_same_meaning_on_every_path(
    postgres_warehouse: Warehouse, duckdb_warehouse: Warehouse, values: list[Any]
) -> None:
    texts = [_json_text(v).replace("\\u0000", "") for v in values]  # jsonb refuses \u0000
    rows = [{"id": i, "uid": f"u{i}", "v": text} for i, text in enumerate(texts)]
    both = _load_both(postgres_warehouse, duckdb_warehouse, rows, {"v": ("cast(:v as jsonb)", "jsonb", "json")})
    for url, paths in both:
        payloads, _ = _all_events(url, "select * from h order by id", ["v"], paths)
        for text, payload in zip(texts, payloads, strict=True):
            sent = json.loads(payload, parse_float=Decimal, parse_int=Decimal)["traits"]["v"]
            assert sent == json.loads(text, parse_float=Decimal, parse_int=Decimal)


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


_NUMBERS = st.tuples(
    st.floats(width=32),
    st.floats(),
    st.decimals(allow_nan=False, allow_infinity=False, places=10, min_value=-(10**27), max_value=10**27),
)


@pytest.mark.postgres
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers=st.lists(_NUMBERS, min_size=1, max_size=6))
def test_any_number_arrives_with_every_digit_on_every_path(
    postgres_warehouse: Warehouse, duckdb_warehouse: Warehouse, numbers: list[tuple[float, float, Decimal]]
) -> None:
    rows = [{"id": i, "uid": f"u{i}", "r": r, "d": d, "n": n} for i, (r, d, n) in enumerate(numbers)]
    columns = {"r": (":r", "real", "float"), "d": (":d", "float8", "double"), "n": (":n", "numeric", "decimal(38, 10)")}
    for url, paths in _load_both(postgres_warehouse, duckdb_warehouse, rows, columns):
        payloads, _ = _all_events(url, "select * from h order by id", ["r", "d", "n"], paths)
        for (r, d, n), payload in zip(numbers, payloads, strict=True):
            sent = json.loads(payload, parse_float=str, parse_int=str)["traits"]
            assert sent["r"] is None if not math.isfinite(r) else _float32(float(sent["r"])) == r
            digits = "" if sent["r"] is None else sent["r"].lstrip("-").split("e")[0].replace(".", "").strip("0")
            assert len(digits) <= 9, "a 32-bit float's text, not its double's"
            assert sent["d"] is None if not math.isfinite(d) else float(sent["d"]) == d
            assert Decimal(sent["n"]) == n
