"""Canonical JSON of warehouse values: valid, lossless where JSON allows, and stable."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_sync.values.encoding import (
    dumps,
    iter_json_lines,
    json_ready,
    key_strings,
    normalize_types,
    row_contents,
)
from segment_sync.warehouse.model_reader import finish_batch


def strict(raw: bytes | str) -> Any:
    """Parse with a JSON parser that refuses NaN / Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


# --- scalars ---------------------------------------------------------------------------------------


def test_compact_utf8() -> None:
    assert dumps({"a": 1, "b": [True, None, "x"]}) == b'{"a":1,"b":[true,null,"x"]}'


def test_naive_datetime_is_utc_with_z() -> None:
    assert dumps(dt.datetime(2024, 1, 1, 10, 0, 0)) == b'"2024-01-01T10:00:00Z"'
    assert dumps(dt.datetime(2024, 1, 1, 10, 0, 0, 123456)) == b'"2024-01-01T10:00:00.123456Z"'


def test_utc_datetime_uses_z() -> None:
    assert dumps(dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)) == b'"2024-01-01T10:00:00Z"'
    assert dumps(dt.datetime(2024, 1, 1, 10, tzinfo=ZoneInfo("UTC"))) == b'"2024-01-01T10:00:00Z"'


def test_aware_datetime_keeps_an_offset() -> None:
    value = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    text = strict(dumps(value))
    assert dt.datetime.fromisoformat(text) == dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)


def test_date_is_iso_day() -> None:
    assert dumps(dt.date(2024, 2, 29)) == b'"2024-02-29"'
    assert dumps({"d": dt.date(1999, 12, 31)}) == b'{"d":"1999-12-31"}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12345678901234567890.123456789012345"), b"12345678901234567890.123456789012345"),
        (Decimal("0.1000000000000000055511151231257827"), b"0.1000000000000000055511151231257827"),
        (Decimal("1.50"), b"1.50"),
        (Decimal("-42"), b"-42"),
        (Decimal("1E+30"), b"1000000000000000000000000000000"),
        (Decimal("123456789012345678901234567890123456789"), b"123456789012345678901234567890123456789"),
    ],
)
def test_decimal_keeps_all_digits(value: Decimal, text: bytes) -> None:
    out = dumps({"v": value})
    assert out == b'{"v":' + text + b"}"
    assert strict(out)["v"] == pytest.approx(float(value))


def test_decimal_beyond_float_precision_is_not_rounded() -> None:
    value = Decimal("0.30000000000000000000000000001")
    assert float(value) == 0.3  # float would lose it
    assert dumps(value) == b"0.30000000000000000000000000001"


@pytest.mark.parametrize("value", [Decimal("1E-7"), Decimal("-0"), Decimal("0E-10"), Decimal("2.5E-12")])
def test_odd_decimals_are_valid_json(value: Decimal) -> None:
    out = dumps([value])
    assert Decimal(str(strict(out)[0])) == value


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]
)
def test_nan_and_infinity_become_null(value: Any) -> None:
    out = dumps({"x": value, "y": [value]})
    assert out == b'{"x":null,"y":[null]}'
    assert strict(out) == {"x": None, "y": [None]}


def test_sig_nan_decimal_is_null() -> None:
    assert dumps(Decimal("sNaN")) == b"null"


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**70, -(2**100), 10**40 + 7])
def test_ints_beyond_64_bits(value: int) -> None:
    out = dumps({"n": value, "nested": [{"m": value}]})
    assert out == b'{"n":' + str(value).encode() + b',"nested":[{"m":' + str(value).encode() + b"}]}"
    assert strict(out)["n"] == value


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 2**64 - 1])
def test_ints_at_64_bit_edges(value: int) -> None:
    out = dumps(value)
    assert out == str(value).encode()


def test_bools_are_not_widened() -> None:
    assert dumps({"t": True, "f": False, "big": 2**65}) == b'{"t":true,"f":false,"big":36893488147419103232}'


def test_bytes_are_base64_always() -> None:
    assert dumps(b"hello") == b'"aGVsbG8="'
    raw = b"\xff\x00\xfe"
    assert strict(dumps(raw)) == base64.b64encode(raw).decode()
    assert strict(dumps(bytearray(b"ab"))) == "YWI="
    assert strict(dumps(memoryview(b"\x80"))) == base64.b64encode(b"\x80").decode()


def test_unicode_is_raw_utf8() -> None:
    out = dumps({"name": "Zoë 🎉 日本"})
    assert out == '{"name":"Zoë 🎉 日本"}'.encode()
    assert b"\\u" not in out


def test_control_characters_escaped() -> None:
    out = dumps("a\nb\x00\x1f")
    assert strict(out) == "a\nb\x00\x1f"
    assert b"\n" not in out and b"\x1f" not in out


def test_nested_structures() -> None:
    value = {"a": {"b": [1, {"c": Decimal("1.10")}, (2, 3)], "d": {"e": None}}, "t": dt.date(2024, 1, 1)}
    out = dumps(value)
    assert out == b'{"a":{"b":[1,{"c":1.10},[2,3]],"d":{"e":null}},"t":"2024-01-01"}'


def test_timedelta_and_others() -> None:
    assert dumps(dt.timedelta(minutes=1, milliseconds=500)) == b"60.5"
    assert dumps(dt.time(10, 30)) == b'"10:30:00"'
    assert strict(dumps({1, 2})) in ([1, 2], [2, 1])


# --- Polars frames ---------------------------------------------------------------------------------


def test_normalize_types_naive_becomes_utc() -> None:
    frame = pl.DataFrame({"t": [dt.datetime(2024, 1, 1, 12)], "x": [1]})
    out = normalize_types(frame)
    assert out.schema["t"] == pl.Datetime("us", "UTC")
    assert out.schema["x"] == pl.Int64
    assert out["t"][0] == dt.datetime(2024, 1, 1, 12, tzinfo=ZoneInfo("UTC"))


def test_normalize_types_converts_other_zones() -> None:
    frame = pl.DataFrame({"t": [dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 7, 1, 12)]}).with_columns(
        paris=pl.col("t").dt.replace_time_zone("Europe/Paris"),
        etc=pl.col("t").dt.replace_time_zone("Etc/UTC"),
        ny=pl.col("t").dt.replace_time_zone("America/New_York"),
    )
    out = normalize_types(frame)
    for name in ("t", "paris", "etc", "ny"):
        assert out.schema[name] == pl.Datetime("us", "UTC"), name
    utc = ZoneInfo("UTC")
    assert out["paris"].to_list() == [dt.datetime(2024, 1, 1, 11, tzinfo=utc), dt.datetime(2024, 7, 1, 10, tzinfo=utc)]
    assert out["ny"].to_list() == [dt.datetime(2024, 1, 1, 17, tzinfo=utc), dt.datetime(2024, 7, 1, 16, tzinfo=utc)]
    assert out["etc"].to_list() == out["t"].to_list()
    # Sources that label UTC differently now agree and can be concatenated.
    assert pl.concat([out.select("t"), out.select(t="etc")]).height == 4


def test_normalize_types_without_datetimes_is_identity() -> None:
    frame = pl.DataFrame({"a": [1], "d": [dt.date(2024, 1, 1)]})
    assert normalize_types(frame).equals(frame)


def test_row_contents_after_normalize() -> None:
    frame = pl.DataFrame({"id": [1], "t": [dt.datetime(2024, 1, 1, 12)]}).with_columns(
        pl.col("t").dt.replace_time_zone("Europe/Paris")
    )
    assert row_contents(normalize_types(frame), ["id", "t"]) == ['{"id":1,"t":"2024-01-01T11:00:00Z"}']


def test_row_contents_types() -> None:
    frame = pl.DataFrame(
        {
            "id": [1, 2],
            "dec": pl.Series([Decimal("12345678901234567890.1234567890"), None], dtype=pl.Decimal(38, 10)),
            "st": [{"a": 1, "b": [1, 2]}, None],
            "l": [[1.5, float("nan")], []],
            "bin": [b"\xff", "é".encode()],
            "d": [dt.date(2024, 1, 2), None],
            "f": [float("inf"), float("-inf")],
            "s": ["🎉", None],
        }
    )
    rows = row_contents(finish_batch(frame, None), ["id", "dec", "st", "l", "bin", "d", "f", "s"])  # as stored
    assert rows == [
        '{"id":1,"dec":12345678901234567890.1234567890,"st":{"a":1,"b":[1,2]},"l":[1.5,null],'
        '"bin":"/w==","d":"2024-01-02","f":null,"s":"🎉"}',
        '{"id":2,"dec":null,"st":null,"l":[],"bin":"w6k=","d":null,"f":null,"s":null}',
    ]
    for row in rows:
        strict(row)


def test_row_contents_follows_the_given_column_order() -> None:
    frame = pl.DataFrame({"b": [1], "a": [2]})
    assert row_contents(frame, ["a", "b"]) == ['{"a":2,"b":1}']
    assert row_contents(frame, ["b"]) == ['{"b":1}']


_NS_RANGE = {"min_value": dt.datetime(1678, 1, 1), "max_value": dt.datetime(2262, 1, 1)}
_PLAIN_CAST = {
    "i8": (pl.Int8, st.integers(-(2**7), 2**7 - 1)),
    "u64": (pl.UInt64, st.integers(0, 2**64 - 1)),
    "i64": (pl.Int64, st.integers(-(2**63), 2**63 - 1)),
    "b": (pl.Boolean, st.booleans()),
    "d": (pl.Date, st.dates()),
    "t": (pl.Time, st.times()),
    "ts": (pl.Datetime("us"), st.datetimes()),
    "tz": (pl.Datetime("ms"), st.datetimes()),
    "ns": (pl.Datetime("ns"), st.datetimes(**_NS_RANGE)),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({k: st.none() | s for k, (_, s) in _PLAIN_CAST.items()}), max_size=8))
def test_plain_columns_encode_as_the_row_by_row_path(rows: list[dict[str, Any]]) -> None:
    """Integers, booleans, dates and times written by casts match what `dumps` writes for each row."""
    frame = pl.DataFrame(rows, schema={k: dtype for k, (dtype, _) in _PLAIN_CAST.items()}).with_columns(
        pl.col("tz").dt.replace_time_zone("Europe/Paris", ambiguous="earliest", non_existent="null"),
        pl.col("ns").dt.replace_time_zone("UTC"),
    )
    ready = frame.select(pl.struct([json_ready(dtype, k).alias(k) for k, dtype in frame.schema.items()]).alias("r"))
    assert row_contents(frame, frame.columns) == [dumps(row).decode() for row in ready["r"].to_list()]


def test_row_contents_empty_frame() -> None:
    assert row_contents(pl.DataFrame({"a": []}, schema={"a": pl.Int64}), ["a"]) == []


def test_key_strings_single() -> None:
    frame = pl.DataFrame({"id": [1, 22, -3], "s": ["x", "y", "z"]})
    assert frame.select(key_strings(frame, ["id"])).to_series().to_list() == ["1", "22", "-3"]
    assert frame.select(key_strings(frame, ["s"])).to_series().to_list() == ["x", "y", "z"]


def test_key_strings_composite() -> None:
    frame = pl.DataFrame({"account": [1, 1], "user": ["a", 'b"q']})
    keys = frame.select(key_strings(frame, ["account", "user"])).to_series().to_list()
    assert keys == ['{"account":"1","user":"a"}', '{"account":"1","user":"b\\"q"}']
    assert [json.loads(k) for k in keys] == [{"account": "1", "user": "a"}, {"account": "1", "user": 'b"q'}]


def test_key_strings_int_and_string_agree() -> None:
    ints = pl.DataFrame({"id": [1, 2], "g": [10, 20]})
    strs = pl.DataFrame({"id": ["1", "2"], "g": ["10", "20"]})
    for cols in (["id"], ["id", "g"]):
        assert (
            ints.select(key_strings(ints, cols)).to_series().to_list()
            == strs.select(key_strings(strs, cols)).to_series().to_list()
        )


def test_key_strings_datetime_and_date() -> None:
    frame = normalize_types(
        pl.DataFrame({"t": [dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 1, 10, 0, 0, 500000)]})
    ).with_columns(d=pl.Series([dt.date(2024, 1, 1), dt.date(2024, 12, 31)]))
    assert frame.select(key_strings(frame, ["t"])).to_series().to_list() == [
        "2024-01-01T10:00:00Z",
        "2024-01-01T10:00:00.500Z",
    ]
    assert frame.select(key_strings(frame, ["d"])).to_series().to_list() == ["2024-01-01", "2024-12-31"]


def test_key_strings_for_zoned_datetime_after_normalize() -> None:
    frame = pl.DataFrame({"t": [dt.datetime(2024, 1, 1, 12)]}).with_columns(
        pl.col("t").dt.replace_time_zone("Europe/Paris")
    )
    frame = normalize_types(frame)
    assert frame.select(key_strings(frame, ["t"])).item() == "2024-01-01T11:00:00Z"


# --- JSON lines ------------------------------------------------------------------------------------


def test_iter_json_lines_all_complete() -> None:
    lines = [b'{"a":1}\n', b'{"b":[2]}\n']
    assert list(iter_json_lines(lines)) == [{"a": 1}, {"b": [2]}]


def test_iter_json_lines_stops_at_torn_line() -> None:
    lines = [b'{"a":1}\n', b'{"b":2}\n', b'{"c":']
    assert list(iter_json_lines(lines)) == [{"a": 1}, {"b": 2}]


def test_iter_json_lines_ignores_complete_json_without_newline() -> None:
    # A line without its newline was not fully written, even when its bytes happen to parse.
    assert list(iter_json_lines([b'{"a":1}\n', b'{"b":2}'])) == [{"a": 1}]


def test_iter_json_lines_from_file(tmp_path: Any) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"k":"x"}\n{"k":"y"}\n{"k":"z"')
    with open(path, "rb") as f:
        assert [e["k"] for e in iter_json_lines(f)] == ["x", "y"]


def test_iter_json_lines_empty() -> None:
    assert list(iter_json_lines([])) == []
