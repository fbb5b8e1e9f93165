"""The columnar event builder gives byte for byte the outcomes of the row-wise reference (`events.build_outcomes`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from segment_sync.diff.keyed_diff import UNCHANGED, compute_diff, delivered_rows, resync_diff
from segment_sync.events import frame_builder
from segment_sync.events.frame_builder import (
    EVENT_FRAME_SCHEMA,
    OUTCOME,
    PAYLOAD,
    PY_WHITESPACE,
    REASON,
    build_event_frame,
)
from segment_sync.events.row_builder import DiffRow
from segment_sync.segment_api.batching import MAX_EVENT_BYTES
from segment_sync.spec import SyncSpec
from segment_sync.values.json_column import from_texts
from segment_sync.values.row_columns import DELIVERED_SCHEMA, HASH, KEY, KIND
from segment_sync.warehouse.model_reader import finish_batch
from segment_sync_tests.support.both_builders import row_wise
from segment_sync_tests.support.warehouse_rows import KEY_COLUMN, SETTINGS, SYNC_UUID, Case, cases, mapped_cases

TRACK = {"added": "Signed Up", "changed": "Changed", "removed": "Left"}


def diff_of(
    sync: SyncSpec, new: pl.DataFrame, old: pl.DataFrame | None = None, gen: int = 1, keys: list[str] | None = None
) -> pl.DataFrame:
    """The diff of a snapshot (normalized, as the snapshot asset stores it) against what `old` delivered."""
    sent = sync.sent_columns
    keys = keys or [KEY_COLUMN]
    state = pl.LazyFrame(schema=DELIVERED_SCHEMA)
    if old is not None:
        state = delivered_rows(finish_batch(old, None), keys, sent, gen).lazy()
    diff = compute_diff(finish_batch(new, None), keys, sent, state)
    return diff.filter(pl.col(KIND) != UNCHANGED).collect()  # the diff asset refreshes their hashes and drops them


def diff_with_json(sync: SyncSpec, new: pl.DataFrame, old: pl.DataFrame | None = None) -> pl.DataFrame:
    """`diff_of` for frames with JSON columns, which a read path stores already (`finish_batch` would base64 them)."""
    state = pl.LazyFrame(schema=DELIVERED_SCHEMA)
    if old is not None:
        state = delivered_rows(old, [KEY_COLUMN], sync.sent_columns, 1).lazy()
    diff = compute_diff(new, [KEY_COLUMN], sync.sent_columns, state)
    return diff.filter(pl.col(KIND) != UNCHANGED).collect()


def assert_same_outcomes(sync: SyncSpec, diff: pl.DataFrame, *, initial: bool = False) -> pl.DataFrame:
    built = build_event_frame(sync, diff, SYNC_UUID, initial=initial)
    expected = row_wise(sync, diff, initial=initial)
    assert built.schema == expected.schema == pl.Schema(EVENT_FRAME_SCHEMA)
    for got, want in zip(built.iter_rows(named=True), expected.iter_rows(named=True), strict=True):
        assert got == want, (sync, got, want)
    assert built.equals(expected)
    return built


def identify(**spec: Any) -> SyncSpec:
    return SyncSpec(**{"name": "s", "model": "m", "type": "identify", "user_id": "uid", **spec})


def track(**spec: Any) -> SyncSpec:
    return SyncSpec(**{"name": "s", "model": "m", "type": "track", "user_id": "uid", "events": TRACK, **spec})


def frame(**columns: Any) -> pl.DataFrame:
    """A snapshot with integer keys 0..n-1."""
    series = [(c if isinstance(c, pl.Series) else pl.Series(c)).alias(name) for name, c in columns.items()]
    return pl.DataFrame([pl.Series(KEY_COLUMN, range(series[0].len())), *series])


@pytest.fixture
def row_wise_rows(monkeypatch: pytest.MonkeyPatch) -> list[DiffRow]:
    """The rows the builder leaves to the row-wise path in this test."""
    seen: list[DiffRow] = []
    original = frame_builder.build_outcomes

    def spy(sync: SyncSpec, rows: list[DiffRow], *args: Any, **kwargs: Any) -> Any:
        seen.extend(rows)
        return original(sync, rows, *args, **kwargs)

    monkeypatch.setattr(frame_builder, "build_outcomes", spy)
    return seen


def assume_no_diff_columns(case: Case) -> None:
    assume(not set(case.new.columns) & {KEY, HASH})  # a model column named like the diff's own breaks the diff


# --- properties over any frame a warehouse can return -------------------------------------------------------


@SETTINGS
@given(case=cases(), gen=st.integers(0, 2**40), initial=st.booleans())
def test_columnar_outcomes_are_the_row_wise_outcomes(case: Case, gen: int, initial: bool) -> None:
    assume_no_diff_columns(case)
    for sync in case.syncs:
        assert_same_outcomes(sync, diff_of(sync, case.new, case.old, gen), initial=initial)


@settings(max_examples=150, deadline=None)
@given(case=cases(), gen=st.integers(0, 2**40))
def test_removed_rows_give_the_row_wise_outcomes(case: Case, gen: int) -> None:
    assume(case.old is not None and not case.old.is_empty())
    assume_no_diff_columns(case)
    assert case.old is not None
    for sync in case.syncs:  # every delivered row removed: read back from its content
        assert_same_outcomes(sync, diff_of(sync, case.old.head(len(case.old) // 3), case.old, gen))


@settings(max_examples=60, deadline=None)
@given(case=cases(), gen=st.integers(0, 50), chunk=st.integers(1, 4))
def test_building_in_chunks_gives_the_same_outcomes(case: Case, gen: int, chunk: int) -> None:
    assume_no_diff_columns(case)
    for sync in case.syncs:
        diff = diff_of(sync, case.new, case.old, gen)
        whole = build_event_frame(sync, diff, SYNC_UUID, initial=False)
        parts = [build_event_frame(sync, diff.slice(o, chunk), SYNC_UUID, initial=False) for o in range(0, 12, chunk)]
        assert pl.concat([whole.clear(), *parts]).equals(whole)


@settings(max_examples=40, deadline=None)
@given(case=cases(), generation=st.integers(0, 9))
def test_a_full_resync_builds_the_same_outcomes(case: Case, generation: int) -> None:
    assume_no_diff_columns(case)
    for sync in case.syncs:
        diff = resync_diff(finish_batch(case.new, None), [KEY_COLUMN], sync.sent_columns, generation).collect()
        assert_same_outcomes(sync, diff)


@SETTINGS
@given(case=mapped_cases(), gen=st.integers(0, 2**40))
def test_mapped_syncs_give_the_row_wise_outcomes(case: Case, gen: int) -> None:
    assume_no_diff_columns(case)
    for sync in case.syncs:
        assert_same_outcomes(sync, diff_of(sync, case.new, case.old, gen))


@settings(max_examples=80, deadline=None)
@given(case=mapped_cases(), gen=st.integers(0, 2**40))
def test_mapped_syncs_give_the_row_wise_outcomes_for_removed_rows(case: Case, gen: int) -> None:
    assume(case.old is not None and not case.old.is_empty())
    assume_no_diff_columns(case)
    assert case.old is not None
    for sync in case.syncs:
        assert_same_outcomes(sync, diff_of(sync, case.old.head(len(case.old) // 3), case.old, gen))


def test_python_whitespace_is_what_str_strip_removes() -> None:
    everything = "".join(map(chr, range(0x110000))).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert set(PY_WHITESPACE) == {c for c in everything if c.isspace()}


# --- which rows take which path -------------------------------------------------------------------------------


def test_typical_rows_are_built_by_columns(row_wise_rows: list[DiffRow]) -> None:
    new = frame(
        uid=["u1", " u2 ", "u3"],
        email=["a@x", "b\u2028@x", None],
        plan=pl.Series(["pro", "free", None], dtype=pl.Categorical),
        score=[1.5, None, float("nan")],
        seats=pl.Series([1, None, 3], dtype=pl.Int32),
        paid=pl.Series([Decimal("10.50"), None, Decimal("0.01")], dtype=pl.Decimal(12, 2)),
        total=pl.Series([2**100, None, -(2**90)], dtype=pl.Int128),
        active=[True, None, False],
        seen=[dt.datetime(2026, 1, 2, 3, 4, 5, 678901), None, dt.datetime(1970, 1, 1)],
        day=[dt.date(2026, 1, 1), None, dt.date(1, 1, 1)],
        at=pl.Series([dt.time(1, 2, 3, 4), None, dt.time(0)]),
        mid=["e-1", "e-2", "e-3"],
    )
    old = new.slice(1, 1).with_columns(pl.lit("old").alias("email"))  # rows 0 and 2 added, 1 changed
    fields = ["email", "plan", "score", "seats", "paid", "total", "active", "seen", "day", "at"]
    for sync in (
        identify(fields=fields, timestamp="seen"),
        track(fields={f.upper(): f for f in fields}, timestamp="day", message_id="mid", anonymous_id="email"),
        SyncSpec(name="s", model="m", type="group", user_id="uid", group_id="seats", fields=fields, timestamp="at"),
    ):
        built = assert_same_outcomes(sync, diff_of(sync, new, old))
        outcomes = {key: (kind, outcome) for key, kind, outcome in built.select(KEY, KIND, OUTCOME).iter_rows()}
        # the group sync's rows: a time of day is no timestamp, and row 1 has no group id
        outcome = "rejected" if sync.type == "group" else "event"
        assert outcomes == {"0": ("added", outcome), "1": ("changed", outcome), "2": ("added", outcome)}
    assert row_wise_rows == []


def test_rows_the_columns_cannot_build_exactly_go_row_wise(row_wise_rows: list[DiffRow]) -> None:
    new = frame(
        uid=["u0", "u1", "u2", "u3", "u4"],
        score=[1e-7, 1.0, 2.0, 3.0, 4.0],  # an exponent: spliced as its text by both builders
        paid=pl.Series([Decimal("1.5"), Decimal("0.0000001"), Decimal("2"), Decimal("3"), Decimal("4")]),
        tags=[None, None, [1], None, None],
        fuzzy=[None, None, None, 1.5, None],  # a fractional id
    )
    sync = identify(fields=["score", "paid", "tags"], anonymous_id="fuzzy")
    assert_same_outcomes(sync, diff_of(sync, new))
    assert sorted(r.key for r in row_wise_rows) == ["2", "3"]  # a list (Polars cannot write it), a fractional id


def test_removed_rows_are_built_by_columns_from_their_content(row_wise_rows: list[DiffRow]) -> None:
    at = [dt.datetime(2026, 1, 1, 12, 30, 1, 123456, tzinfo=dt.UTC), None, dt.datetime(1999, 12, 31, tzinfo=dt.UTC)]
    old = frame(
        uid=["u0", "u1", " u2 "],
        plan=["a", 'b "quoted" \u00e9', None],
        seats=pl.Series([1, -(2**63), 3], dtype=pl.Int64),
        big=pl.Series([0, 2**64 - 1, 7], dtype=pl.UInt64),
        score=[0.5, 1e-7, float("nan")],
        paid=[True, False, None],
        at=pl.Series(at),
        local=pl.Series(at).dt.convert_time_zone("Europe/Paris"),
        naive=pl.Series(at).dt.replace_time_zone(None).dt.cast_time_unit("ns"),
        day=[dt.date(2026, 1, 1), None, dt.date(1, 1, 1)],
        time=[dt.time(23, 59, 59, 999999), dt.time(0), None],
    )
    new = old.head(1).with_columns(pl.lit("z").alias("plan"))
    sent = ["plan", "seats", "big", "score", "paid", "at", "local", "naive", "day", "time"]
    sync = track(fields=sent, timestamp="local")
    built = assert_same_outcomes(sync, diff_of(sync, new, old))
    assert built[KIND].to_list() == ["changed", "removed", "removed"]
    assert row_wise_rows == []
    assert_same_outcomes(identify(fields=["plan"]), diff_of(identify(fields=["plan"]), new, old))
    assert row_wise_rows == []  # an identify sync skips removed rows: nothing to build


def test_removed_rows_whose_content_reads_back_otherwise_go_row_wise(row_wise_rows: list[DiffRow]) -> None:
    sync = track(fields=["seats"])
    old = frame(uid=["u0", "u1"], seats=[1.5, 2.0])  # delivered while the column held doubles
    new = frame(uid=["u0"], seats=pl.Series([1], dtype=pl.Int64)).with_columns(pl.lit(9).alias(KEY_COLUMN))
    diff = diff_of(sync, new, old)
    assert sorted(diff[KIND].to_list()) == ["added", "removed", "removed"]
    assert_same_outcomes(sync, diff)
    assert sorted(r.kind for r in row_wise_rows) == ["removed", "removed"]  # 1.5 would read as 1: not exact
    row_wise_rows.clear()
    old = frame(uid=["u0"], seats=["many"])  # text where the column now holds integers: not read at all
    assert_same_outcomes(sync, diff_of(sync, new, old))
    assert [r.kind for r in row_wise_rows] == ["removed"]
    row_wise_rows.clear()
    sync = track(fields=["price"])
    old = frame(uid=["u0"], price=pl.Series([Decimal("1.10")], dtype=pl.Decimal(10, 2)))
    assert_same_outcomes(sync, diff_of(sync, old.clear(), old))
    assert [r.kind for r in row_wise_rows] == ["removed"]  # decimals are read back by `loads` as Decimals


def test_binary_as_base64_and_narrow_floats_are_built_by_columns(row_wise_rows: list[DiffRow]) -> None:
    new = frame(uid=["u0"], blob=[b"\xff"], ratio=pl.Series([0.1], dtype=pl.Float32))
    sync = identify(fields=["blob", "ratio"])
    built = assert_same_outcomes(sync, diff_of(sync, new))
    assert row_wise_rows == []
    assert b'"traits":{"blob":"/w==","ratio":0.1}' in built[PAYLOAD][0]


def test_json_columns_are_spliced_as_they_are_and_ids_from_them_go_row_wise(row_wise_rows: list[DiffRow]) -> None:
    texts, _ = from_texts(pl.Series(['{"a": [1, 2.50]}', "3", None, '"u9"', "[true]"]))
    new = frame(uid=["u0", "u1", "u2", "u3", "u4"], props=texts, jid=texts)  # as a read path stores JSON
    state = pl.LazyFrame(schema=DELIVERED_SCHEMA)
    for sync in (identify(fields=["props"]), identify(fields=["props"], user_id="jid")):
        diff = compute_diff(new, [KEY_COLUMN], sync.sent_columns, state).collect()
        built = assert_same_outcomes(sync, diff)
        traits = [p.split(b'"traits":')[1].split(b',"messageId"')[0] if p else None for p in built[PAYLOAD]]
    assert sorted(r.key for r in row_wise_rows) == ["0", "1", "3", "4"]  # the non-null ids of the second sync
    assert built["outcome"].to_list() == ["rejected", "event", "rejected", "event", "rejected"]
    assert built["reason"][0] == "user_id column 'jid' holds a JSON object, not a string or number"
    assert traits[1] == b'{"props":3}' and traits[3] == b'{"props":"u9"}'
    assert b'"userId":"3"' in built[PAYLOAD][1] and b'"userId":"u9"' in built[PAYLOAD][3]


# --- the rules of `build_event`, case by case ------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        pl.Series(["  u1\x1c", "\x1f\x85 ", "", None, "\u3000x\u2028", "😀"]),  # Python strips \x1c-\x1f, Rust doesn't
        pl.Series([0, -1, 2**63 - 1, None, 7, 8], dtype=pl.Int64),
        pl.Series([2**64 - 1, 0, None, 1, 2, 3], dtype=pl.UInt64),
        pl.Series([True, False, None, True, False, True]),
        pl.Series([1.0, 1.5, None, 1e300, float("nan"), -0.0]),
        pl.Series([Decimal("42.000"), Decimal("1.5"), None, Decimal("0"), Decimal("-3.25"), Decimal("7")]),
        pl.Series([dt.date(2026, 1, 1), None, dt.date(1, 1, 1), dt.date(9999, 12, 31), None, None]),
        pl.Series([[1], None, [], [2, 3], None, [4]]),
    ],
    ids=["text", "int", "uint", "bool", "float", "decimal", "date", "list"],
)
def test_ids_of_every_type(uid: pl.Series) -> None:
    new = frame(uid=uid, anon=["a", None, " ", "b", None, "c"], acct=uid, plan=["p"] * 6)
    for sync in (
        identify(fields=["plan"]),
        identify(fields=["plan"], user_id=None, anonymous_id="uid"),
        identify(fields=["plan"], anonymous_id="anon"),
        SyncSpec(name="s", model="m", type="group", user_id="anon", group_id="acct", fields=["plan"]),
    ):
        assert_same_outcomes(sync, diff_of(sync, new))


@pytest.mark.parametrize(
    "ts",
    [
        pl.Series(["2024-01-01 10:00:00", "2024-01-01T12:00:00+02:00", "yesterday", None, " 2024-01-01 ", "10:00"]),
        pl.Series([dt.datetime(2024, 1, 1, 10, 0, 0, 123456), None, dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)]),
        pl.Series([dt.datetime(2024, 6, 1, 12, 0, 0, 250000)]).dt.replace_time_zone("Europe/Paris"),
        pl.Series([dt.datetime(2024, 6, 1, 12, 0, 0, 999999)]).cast(pl.Datetime("ns")).dt.offset_by("999ns"),
        pl.Series([dt.date(2024, 3, 4), None, dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
        pl.Series([dt.time(10, 0), None]),
        pl.Series([1704103200, None]),
        pl.Series([1.5, float("inf")]),
        pl.Series([True, None]),
        pl.Series([None, None], dtype=pl.Null),
    ],
    ids=["text", "naive", "zoned", "ns", "date", "time", "int", "float", "bool", "null"],
)
def test_timestamps_of_every_type(ts: pl.Series) -> None:
    new = frame(uid=[f"u{i}" for i in range(ts.len())], ts=ts)
    for sync in (identify(timestamp="ts", fields=["ts"]), track(timestamp="ts")):
        assert_same_outcomes(sync, diff_of(sync, new))


@pytest.mark.parametrize(
    "mid",
    [
        pl.Series(["m" * 100, "m" * 101, "😀" * 100, "😀" * 101, "", " \x1d ", None, 'q"uote\n']),
        pl.Series([1, None, -5, 2**62, 0, 1, 2, 3]),
        pl.Series([True, False, None, True, True, True, True, True]),
        pl.Series([1.5, None, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        pl.Series([dt.date(2024, 1, 1), None] * 4),
    ],
    ids=["text", "int", "bool", "float", "date"],
)
def test_message_id_columns_of_every_type(mid: pl.Series) -> None:
    old = frame(uid=[f"u{i}" for i in range(8)], mid=mid, plan=["a"] * 8).tail(4)
    new = frame(uid=[f"u{i}" for i in range(8)], mid=mid, plan=["b"] * 8)  # 4 added, 4 changed
    sync = track(fields=["plan"], message_id="mid")
    built = assert_same_outcomes(sync, diff_of(sync, new, old, gen=3))
    assert set(built[KIND]) == {"added", "changed"}


def test_event_size_limit_to_the_byte() -> None:
    sync = identify(fields=["blob"])
    overhead = len(
        build_event_frame(sync, diff_of(sync, frame(uid=["u"], blob=[""])), SYNC_UUID, initial=False)[PAYLOAD][0]
    )
    fits = MAX_EVENT_BYTES - overhead
    blobs = ["x" * fits, "x" * (fits + 1), "é" * (fits // 2), "é" * (fits // 2 + 1), "\n" * (fits // 2 + 1)]
    built = assert_same_outcomes(sync, diff_of(sync, frame(uid=["u"] * 5, blob=blobs)))
    assert built[OUTCOME].to_list() == ["event", "rejected", "event", "rejected", "rejected"]
    assert built[REASON][1] == "event is 32,001 bytes; Segment's limit is 32,000 per event"


def test_field_names_and_column_names_that_need_escaping() -> None:
    new = frame(**{"uid": ["u1"], 'q"uote': ["a"], "ü 😀": [1], "*": [2.5], "^a$": [True], "_row": ["r"]})
    sync = identify(fields={"$set": 'q"uote', "a.b": "ü 😀", "\x00": "*", "^": "^a$", "_i": "_row"})
    assert_same_outcomes(sync, diff_of(sync, new))


def test_composite_keys_and_decimal_runs() -> None:
    new = pl.DataFrame(
        {
            "a": [1, 1, 2],
            "b": ["x", "y", "x"],
            "uid": ["u1", "u2", "u3"],
            "p": pl.Series([Decimal("1.10"), None, Decimal("0.000000")], dtype=pl.Decimal(20, 6)),
            "s": ["s1", None, "s3"],
        }
    )
    sync = identify(fields={"first": "p", "s": "s", "again": "p", "last": "s"})
    assert_same_outcomes(sync, diff_of(sync, new, keys=["a", "b"]))


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize("send_initial", [True, False])
def test_skips_follow_the_sync_and_the_first_run(initial: bool, send_initial: bool) -> None:
    old = frame(uid=["u0", "u1", "u2"], plan=["a", "b", "c"])
    new = frame(uid=["u0", "u1", "u3", "u4"], plan=["a", "B", "d", "e"]).slice(1)
    for sync in (
        track(fields=["plan"], events={"added": "A"}, send_initial=send_initial),
        track(fields=["plan"], events={"changed": "C", "removed": "R"}, send_initial=send_initial),
        SyncSpec(name="s", model="m", type="audience", user_id="uid", fields=["plan"], send_initial=send_initial),
    ):
        built = assert_same_outcomes(sync, diff_of(sync, new, old), initial=initial)
        if initial and not send_initial:
            assert set(built[OUTCOME]) == {"skipped"}
        else:
            assert "event" in set(built[OUTCOME])


def test_other_kinds_are_refused() -> None:
    sync = identify(fields=["plan"])
    diff = diff_of(sync, frame(uid=["u1"], plan=["a"])).with_columns(pl.lit("unchanged").alias(KIND))
    with pytest.raises(ValueError, match="unchanged"):
        build_event_frame(sync, diff, SYNC_UUID, initial=False)


def test_an_empty_diff_builds_nothing() -> None:
    sync = identify(fields=["plan"])
    diff = diff_of(sync, frame(uid=["u1"], plan=["a"])).clear()
    built = build_event_frame(sync, diff, SYNC_UUID, initial=False)
    assert built.schema == pl.Schema(EVENT_FRAME_SCHEMA) and built.is_empty()


# --- mappings ---------------------------------------------------------------------------------------------------


def test_mapped_rows_are_built_by_columns(row_wise_rows: list[DiffRow]) -> None:
    texts, _ = from_texts(pl.Series(['{"All": false, "Mixpanel": true}', None, "null"]))
    new = frame(
        uid=["u0", "u1", "u2"],
        first=["Ada", None, 'q"uote\n'],
        last=["Lovelace", None, None],
        city=["Lyon", None, "Paris"],
        seats=pl.Series([1, None, 3], dtype=pl.Int32),
        paid=pl.Series([Decimal("10.50"), None, Decimal("0.01")], dtype=pl.Decimal(12, 2)),
        seen=[dt.datetime(2026, 1, 2, 3, 4, 5, 678901), None, dt.datetime(1970, 1, 1)],
        ip=["10.0.0.1", None, "::1"],
        dest=texts,
        ts=pl.Series([1704103200, None, -1], dtype=pl.Int64),
    )
    old = new.slice(2, 1).with_columns(pl.lit("Nice").alias("city"), pl.lit(7).alias("seats"))
    fields = {
        "address.city": "city",
        "n.seats": "seats",
        "n.paid": "paid",
        "plan_source": {"static": {"from": "warehouse", "v": [1.5, None]}},
        "full_name": {"template": "{first} {last} ({seats}, {paid}, {seen})"},
        "utm\\.source": "ip",
    }
    for omit in (False, True):
        for sync in (
            track(
                fields=fields,
                context={"ip": "ip", "traits.name": "first", "locale": {"static": "en"}},
                integrations="dest",
                omit_nulls=omit,
                timestamp="ts",
                timestamp_unit="s",
                changed_fields="changed_fields",
                previous_values="previous",
            ),
            identify(fields=fields, integrations={"All": False}, omit_nulls=omit, changed_fields="changed"),
        ):
            built = assert_same_outcomes(sync, diff_with_json(sync, new, old))
            assert built[OUTCOME].to_list() == ["event", "event", "event"]
    assert row_wise_rows == []


@pytest.mark.parametrize("unit", ["s", "ms"])
@pytest.mark.parametrize(
    "ts",
    [
        pl.Series([1704103200, None, -62135596800, 253402300799, 253402300800, -62135596801], dtype=pl.Int64),
        pl.Series([2**64 - 1, 0, None, 1, 2, 3], dtype=pl.UInt64),
        pl.Series([1704103200.1239, float("nan"), -0.5, 1e300, None, 1.0]),
        pl.Series([Decimal("1704103200.123"), None, Decimal("-1"), Decimal("0.0001"), Decimal("2"), Decimal("3")]),
        pl.Series(["1704103200", " 12 ", "yesterday", None, "1e3", ""]),
        pl.Series([True, None, False, True, True, True]),
        pl.Series([dt.date(2024, 1, 1), None, None, None, None, None]),
        pl.Series([[1], None, [], [2], None, [4]]),
    ],
    ids=["int", "uint", "float", "decimal", "text", "bool", "date", "list"],
)
def test_epoch_timestamps_of_every_type(ts: pl.Series, unit: str) -> None:
    new = frame(uid=[f"u{i}" for i in range(ts.len())], ts=ts)
    for sync in (identify(timestamp="ts", timestamp_unit=unit), track(timestamp="ts", timestamp_unit=unit)):
        assert_same_outcomes(sync, diff_with_json(sync, new))


def test_templates_and_integrations_from_json_columns() -> None:
    texts, _ = from_texts(pl.Series(['{"a": [1, 2.50]}', '"text"', None, "3", "[true]", "null"]))
    new = frame(uid=[f"u{i}" for i in range(6)], doc=texts, word=["x", "y", None, "z", "w", "v"])
    sync = identify(fields={"t": {"template": "<{doc}|{word}>"}}, integrations="doc", context={"d": "doc"})
    built = assert_same_outcomes(sync, diff_with_json(sync, new))
    assert built[OUTCOME].to_list() == ["event", "rejected", "event", "rejected", "rejected", "event"]


def test_changed_fields_by_columns_match_row_by_row() -> None:
    old = frame(uid=["u0", "u1", "u2"], plan=["a", "b", None], seats=[1, 2, 3], first=["A", "B", "C"])
    new = frame(uid=["u0", "u1", "u9"], plan=["a", "B", "c"], seats=[1, 2, 4], first=["A", "B", "C"])
    fields = {"plan": "plan", "x.seats": "seats", "name": {"template": "{first}!"}, "k": {"static": 1}}
    described = track(fields=fields, changed_fields="changed_fields", previous_values="previous")
    built = assert_same_outcomes(described, diff_of(described, new, old))
    assert built[KIND].to_list() == ["changed", "changed"]
    assert b'"changed_fields":["plan","x.seats"],"previous":{"plan":null,"x":{"seats":3}}}' in built[PAYLOAD][1]
    for sync in (
        track(fields={}, changed_fields="changed_fields"),  # only the id changed: an empty list
        identify(fields=fields, previous_values="previous", omit_nulls=True),
    ):
        assert_same_outcomes(sync, diff_of(sync, new, old))
