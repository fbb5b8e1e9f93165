"""Diff rows into Segment messages: names, ids, timestamps, messageIds and local rejections."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from segment_sync import __version__
from segment_sync.events.row_builder import (
    DiffRow,
    Event,
    Outcome,
    RowRejected,
    build_event,
    build_outcomes,
    message_id_for,
)
from segment_sync.events.rules import AUDIENCE_EVENTS, event_name
from segment_sync.segment_api.batching import MAX_EVENT_BYTES
from segment_sync.spec import SyncSpec
from segment_sync.values.encoding import dumps, normalize_types, row_contents

SYNC_UUID = "0b9d6c1e-4f3a-4c55-9d0e-3c1f2a4b5c6d"
CONTEXT = {"library": {"name": "segment-sync", "version": __version__}}


def spec(**overrides: Any) -> SyncSpec:
    base: dict[str, Any] = {
        "name": "s",
        "model": "m",
        "type": "track",
        "user_id": "uid",
        "events": {"added": "User Signed Up", "changed": "User Changed Plan", "removed": "User Deleted Account"},
        "fields": {"plan": "plan_name"},
    }
    base.update(overrides)
    return SyncSpec(**{k: v for k, v in base.items() if v is not None})


def enc(values: dict[str, Any] | None) -> str | None:
    return None if values is None else dumps(values).decode()


def row(
    kind: str,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    *,
    key: str = "k1",
    before_gen: int | None = None,
) -> DiffRow:
    return DiffRow(key, kind, before_gen, enc(before), enc(after))  # type: ignore[arg-type]


def strict(raw: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


def event(sync: SyncSpec, r: DiffRow) -> dict[str, Any]:
    return strict(build_event(sync, r, SYNC_UUID).payload)


def outcome(sync: SyncSpec, r: DiffRow, *, initial: bool = False) -> Outcome:
    (out,) = build_outcomes(sync, [r], SYNC_UUID, initial=initial)
    return out


def rejection(sync: SyncSpec, r: DiffRow) -> str:
    out = outcome(sync, r)
    assert out.event is None
    assert out.rejected is not None
    return out.rejected


USER = {"uid": "u1", "plan_name": "pro"}


# --- track -----------------------------------------------------------------------------------------


def test_track_added_exact_payload() -> None:
    r = row("added", USER)
    assert event(spec(), r) == {
        "type": "track",
        "event": "User Signed Up",
        "userId": "u1",
        "properties": {"plan": "pro"},
        "messageId": message_id_for(SYNC_UUID, r),
        "context": CONTEXT,
    }


def test_track_names_per_kind() -> None:
    sync = spec()
    assert event(sync, row("added", USER))["event"] == "User Signed Up"
    assert event(sync, row("changed", USER, {"uid": "u1", "plan_name": "free"}, before_gen=1))["event"] == (
        "User Changed Plan"
    )
    assert event(sync, row("removed", None, USER, before_gen=1))["event"] == "User Deleted Account"


def test_track_changed_uses_after() -> None:
    msg = event(spec(), row("changed", {"uid": "u1", "plan_name": "team"}, USER, before_gen=1))
    assert msg["properties"] == {"plan": "team"}


def test_track_removed_uses_before() -> None:
    msg = event(spec(), row("removed", None, {"uid": "u9", "plan_name": "gold"}, before_gen=4))
    assert msg["userId"] == "u9"
    assert msg["properties"] == {"plan": "gold"}


@pytest.mark.parametrize("kind", ["added", "changed", "removed"])
def test_track_missing_name_is_skipped(kind: str) -> None:
    names = {k: f"E {k}" for k in ("added", "changed", "removed") if k != kind}
    sync = spec(events=names)
    r = row(kind, USER if kind != "removed" else None, USER if kind != "added" else None, before_gen=1)
    out = outcome(sync, r)
    assert out.skipped
    assert out.event is None and out.rejected is None
    assert event_name(sync, kind) is None  # type: ignore[arg-type]


def test_track_empty_event_name_never_sent() -> None:
    """Segment drops a track with an empty event name (`event_not_defined`); so must we, loudly."""
    try:
        sync = spec(events={"added": "", "changed": "User Changed Plan"})
    except ValidationError:
        return  # rejecting the configuration is a fine answer
    out = outcome(sync, row("added", USER))
    assert out.event is None or strict(out.event.payload).get("event"), out


# --- audience --------------------------------------------------------------------------------------


def test_audience_entered_and_exited() -> None:
    sync = spec(type="audience", events=None)
    entered = event(sync, row("added", USER))
    assert entered["type"] == "track"
    assert entered["event"] == "Segment Entered"
    assert entered["properties"] == {"plan": "pro"}
    exited = event(sync, row("removed", None, {"uid": "u1", "plan_name": "old"}, before_gen=2))
    assert exited["event"] == "Segment Exited"
    assert exited["properties"] == {"plan": "old"}
    assert AUDIENCE_EVENTS == {"added": "Segment Entered", "removed": "Segment Exited"}


def test_audience_changed_is_skipped() -> None:
    out = outcome(spec(type="audience", events=None), row("changed", USER, {"uid": "u1"}, before_gen=1))
    assert out.skipped


# --- identify and group ----------------------------------------------------------------------------


def test_identify_traits() -> None:
    sync = spec(type="identify", events=None, fields=["email", "plan"], anonymous_id="anon")
    r = row("added", {"uid": 7, "anon": "a-1", "email": "x@y.z", "plan": None})
    assert event(sync, r) == {
        "type": "identify",
        "userId": "7",
        "anonymousId": "a-1",
        "traits": {"email": "x@y.z", "plan": None},
        "messageId": message_id_for(SYNC_UUID, r),
        "context": CONTEXT,
    }
    changed = event(sync, row("changed", {"uid": 7, "email": "new@y.z"}, {"uid": 7, "email": "x@y.z"}, before_gen=1))
    assert changed["type"] == "identify"
    assert changed["traits"] == {"email": "new@y.z", "plan": None}
    assert "properties" not in changed and "event" not in changed


def test_identify_removed_is_skipped() -> None:
    out = outcome(spec(type="identify", events=None), row("removed", None, USER, before_gen=1))
    assert out.skipped


def test_group_payload() -> None:
    sync = spec(type="group", events=None, group_id="account_id", fields={"name": "account_name"})
    r = row("added", {"uid": "u1", "account_id": 99, "account_name": "Acme"})
    built = build_event(sync, r, SYNC_UUID)
    assert built.type == "group"
    assert strict(built.payload) == {
        "type": "group",
        "userId": "u1",
        "groupId": "99",
        "traits": {"name": "Acme"},
        "messageId": message_id_for(SYNC_UUID, r),
        "context": CONTEXT,
    }
    changed = event(sync, row("changed", {"uid": "u1", "account_id": 99, "account_name": "Acme 2"}, before_gen=1))
    assert changed["type"] == "group"
    assert changed["traits"] == {"name": "Acme 2"}
    assert outcome(sync, row("removed", None, {"uid": "u1", "account_id": 99}, before_gen=1)).skipped


@pytest.mark.parametrize("group_value", [None, "", "  "])
def test_group_without_group_id_rejected(group_value: Any) -> None:
    sync = spec(type="group", events=None, group_id="account_id")
    reason = rejection(sync, row("added", {"uid": "u1", "account_id": group_value}))
    assert "no group id" in reason
    assert "'account_id'" in reason


# --- first run -------------------------------------------------------------------------------------


def test_initial_without_send_initial_skips_everything() -> None:
    rows = [row("added", {"uid": f"u{i}", "plan_name": "p"}, key=f"k{i}") for i in range(5)]
    for sync in (spec(), spec(type="audience", events=None)):
        outs = list(build_outcomes(sync, rows, SYNC_UUID, initial=True))
        assert [o.row for o in outs] == rows
        assert all(o.skipped for o in outs)


def test_initial_skip_also_skips_rows_that_would_be_rejected() -> None:
    outs = list(build_outcomes(spec(), [row("added", {"uid": None})], SYNC_UUID, initial=True))
    assert outs[0].skipped


def test_initial_with_send_initial_sends() -> None:
    rows = [row("added", {"uid": f"u{i}", "plan_name": "p"}, key=f"k{i}") for i in range(3)]
    outs = list(build_outcomes(spec(send_initial=True), rows, SYNC_UUID, initial=True))
    assert [strict(o.event.payload)["userId"] for o in outs if o.event] == ["u0", "u1", "u2"]


@pytest.mark.parametrize("kind", ["identify", "group"])
def test_identify_and_group_always_send_initial(kind: str) -> None:
    extra = {"group_id": "g"} if kind == "group" else {}
    sync = spec(type=kind, events=None, **extra)
    outs = list(build_outcomes(sync, [row("added", {"uid": "u1", "g": "acme"})], SYNC_UUID, initial=True))
    assert outs[0].event is not None
    assert outs[0].event.type == kind


def test_later_runs_send_without_send_initial() -> None:
    outs = list(build_outcomes(spec(), [row("added", USER)], SYNC_UUID, initial=False))
    assert outs[0].event is not None


def test_outcomes_keep_row_order_and_mix() -> None:
    rows = [
        row("added", USER, key="a"),
        row("added", {"uid": None}, key="b"),
        row("changed", USER, {"uid": "u1"}, key="c", before_gen=1),
        row("removed", None, USER, key="d", before_gen=1),
    ]
    sync = spec(events={"added": "A", "removed": "R"})
    outs = list(build_outcomes(sync, rows, SYNC_UUID, initial=False))
    assert [o.row.key for o in outs] == ["a", "b", "c", "d"]
    assert [(o.event is not None, o.rejected is not None, o.skipped) for o in outs] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, False, False),
    ]


# --- ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, "", "   ", True])
def test_row_without_any_id_rejected(missing: Any) -> None:
    sync = spec(anonymous_id="anon")
    reason = rejection(sync, row("added", {"uid": missing, "anon": missing, "plan_name": "p"}))
    assert "no user id" in reason
    assert "'uid'" in reason and "'anon'" in reason


def test_missing_user_id_with_anonymous_id_sends_no_null() -> None:
    msg = event(spec(anonymous_id="anon"), row("added", {"uid": None, "anon": "a1"}))
    assert msg["anonymousId"] == "a1"
    assert "userId" not in msg


def test_empty_anonymous_id_is_left_out() -> None:
    msg = event(spec(anonymous_id="anon"), row("added", {"uid": "u1", "anon": ""}))
    assert msg["userId"] == "u1"
    assert "anonymousId" not in msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, "42"),
        (-7, "-7"),
        (0, "0"),
        (42.0, "42"),
        (Decimal("42.000"), "42"),
        (Decimal("1.5"), "1.5"),
        (12345678901234567890, "12345678901234567890"),
        (2**70, str(2**70)),
        ("abc", "abc"),
    ],
)
def test_numeric_ids_become_strings(value: Any, expected: str) -> None:
    msg = event(spec(), row("added", {"uid": value}))
    assert msg["userId"] == expected


@pytest.mark.parametrize("value", [12345678901234567890123456789012, Decimal("12345678901234567890123456789012345678")])
def test_long_numeric_ids_keep_every_digit(value: Any) -> None:
    msg = event(spec(), row("added", {"uid": value}))
    assert msg["userId"] == str(value)


def test_id_from_a_structured_value_rejected() -> None:
    reason = rejection(spec(), row("added", {"uid": {"nested": 1}}))
    assert "user_id column 'uid'" in reason


# --- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01 10:00:00", "2024-01-01T10:00:00.000Z"),  # SQLite, naive: UTC
        ("2024-01-01T10:00:00", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01T10:00:00.123456Z", "2024-01-01T10:00:00.123Z"),
        ("2024-01-01 10:00:00.5", "2024-01-01T10:00:00.500Z"),
        ("2024-01-01T12:00:00+02:00", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01T00:30:00-05:00", "2024-01-01T05:30:00.000Z"),
        ("2024-01-01", "2024-01-01T00:00:00.000Z"),  # a date: midnight UTC
        (dt.datetime(2024, 3, 4, 5, 6, 7), "2024-03-04T05:06:07.000Z"),  # encoded by dumps
        (dt.date(2024, 3, 4), "2024-03-04T00:00:00.000Z"),
    ],
)
def test_timestamp_formats(value: Any, expected: str) -> None:
    msg = event(spec(timestamp="ts"), row("added", {"uid": "u1", "ts": value}))
    assert msg["timestamp"] == expected


def test_timestamp_from_a_polars_frame() -> None:
    frame = pl.DataFrame(
        {"uid": ["u1"], "ts": [dt.datetime(2024, 6, 1, 12, 0, 0, 250000)], "day": [dt.date(2024, 6, 2)]}
    ).with_columns(pl.col("ts").dt.replace_time_zone("Europe/Paris"))
    (content,) = row_contents(normalize_types(frame), ["day", "ts", "uid"])
    r = DiffRow("k", "added", None, None, content)
    assert strict(build_event(spec(timestamp="ts"), r, SYNC_UUID).payload)["timestamp"] == "2024-06-01T10:00:00.250Z"
    assert strict(build_event(spec(timestamp="day"), r, SYNC_UUID).payload)["timestamp"] == "2024-06-02T00:00:00.000Z"


def test_null_timestamp_is_left_out() -> None:
    msg = event(spec(timestamp="ts"), row("added", {"uid": "u1", "ts": None}))
    assert "timestamp" not in msg


def test_no_timestamp_column_no_timestamp() -> None:
    assert "timestamp" not in event(spec(), row("added", {"uid": "u1", "ts": "2024-01-01"}))


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "01/02/2024", "10:00:00"])
def test_garbage_timestamp_rejected(value: str) -> None:
    reason = rejection(spec(timestamp="ts"), row("added", {"uid": "u1", "ts": value}))
    assert "timestamp column 'ts'" in reason
    assert "ISO-8601" in reason


def test_numeric_timestamp_rejected() -> None:
    reason = rejection(spec(timestamp="ts"), row("added", {"uid": "u1", "ts": 1704103200}))
    assert "timestamp column 'ts'" in reason


# --- messageId -------------------------------------------------------------------------------------


def test_message_id_column_used_for_added() -> None:
    sync = spec(message_id="event_uuid")
    built = build_event(sync, row("added", {"uid": "u1", "event_uuid": "evt-123"}), SYNC_UUID)
    assert built.message_id == "evt-123"
    assert strict(built.payload)["messageId"] == "evt-123"


def test_message_id_column_number_becomes_string() -> None:
    msg = event(spec(message_id="mid"), row("added", {"uid": "u1", "mid": 12345}))
    assert msg["messageId"] == "12345"


def test_message_id_column_at_limit_ok_over_limit_rejected() -> None:
    sync = spec(message_id="mid")
    assert event(sync, row("added", {"uid": "u1", "mid": "m" * 100}))["messageId"] == "m" * 100
    reason = rejection(sync, row("added", {"uid": "u1", "mid": "m" * 101}))
    assert "101 characters" in reason
    assert "100" in reason


@pytest.mark.parametrize("value", [None, "", "  "])
def test_message_id_column_null_rejected(value: Any) -> None:
    reason = rejection(spec(message_id="mid"), row("added", {"uid": "u1", "mid": value}))
    assert "message_id column 'mid' is null or empty" in reason


@pytest.mark.parametrize("kind", ["changed", "removed"])
def test_message_id_column_not_reused_for_changed_or_removed(kind: str) -> None:
    sync = spec(message_id="mid")
    values = {"uid": "u1", "mid": "evt-1", "plan_name": "pro"}
    previous = {"uid": "u1", "mid": "evt-1", "plan_name": "free"}
    r = row(kind, values if kind == "changed" else None, previous, before_gen=2)
    built = build_event(sync, r, SYNC_UUID)
    assert built.message_id != "evt-1"
    assert built.message_id == message_id_for(SYNC_UUID, r)


def test_message_id_column_not_needed_for_changed() -> None:
    sync = spec(message_id="mid")
    r = row("changed", {"uid": "u1", "mid": None}, {"uid": "u1", "mid": None}, before_gen=1)
    assert outcome(sync, r).event is not None


def test_generated_message_id_deterministic() -> None:
    a = row("changed", {"uid": "u1", "plan_name": "b"}, {"uid": "u1", "plan_name": "a"}, before_gen=3)
    b = row("changed", {"uid": "u1", "plan_name": "b"}, {"uid": "u1", "plan_name": "a"}, before_gen=3)
    assert message_id_for(SYNC_UUID, a) == message_id_for(SYNC_UUID, b)
    first, second = build_event(spec(), a, SYNC_UUID), build_event(spec(), b, SYNC_UUID)
    assert first.message_id == second.message_id
    assert first.payload == second.payload  # a re-send is byte for byte the same event


def test_generated_message_id_varies_with_every_input() -> None:
    base = DiffRow("k1", "changed", 3, '{"v":1}', '{"v":2}')
    variants = [
        base,
        DiffRow("k2", "changed", 3, '{"v":1}', '{"v":2}'),
        DiffRow("k1", "added", 3, '{"v":1}', '{"v":2}'),
        DiffRow("k1", "changed", 4, '{"v":1}', '{"v":2}'),
        DiffRow("k1", "changed", None, '{"v":1}', '{"v":2}'),
        DiffRow("k1", "changed", 3, '{"v":0}', '{"v":2}'),
        DiffRow("k1", "changed", 3, '{"v":1}', '{"v":3}'),
    ]
    ids = [message_id_for(SYNC_UUID, r) for r in variants]
    ids.append(message_id_for("another-sync-uuid", base))
    assert len(set(ids)) == len(ids)


def test_repeated_change_gets_a_new_id() -> None:
    """A -> B, then B -> A, then A -> B again: the third is not the first, thanks to the generation."""
    first = DiffRow("k", "changed", 1, '{"v":"A"}', '{"v":"B"}')
    third = DiffRow("k", "changed", 3, '{"v":"A"}', '{"v":"B"}')
    assert message_id_for(SYNC_UUID, first) != message_id_for(SYNC_UUID, third)


def test_re_added_after_tombstone_gets_a_new_id() -> None:
    original = DiffRow("k", "added", None, None, '{"v":1}')
    again = DiffRow("k", "added", 5, None, '{"v":1}')
    assert message_id_for(SYNC_UUID, original) != message_id_for(SYNC_UUID, again)


def test_generated_message_id_shape() -> None:
    mid = message_id_for(SYNC_UUID, DiffRow("k" * 500, "added", None, None, "x" * 10_000))
    assert len(mid) == 36
    assert len(mid) <= 100
    assert mid == mid.lower()


# --- size and validity -----------------------------------------------------------------------------


def _blob_event(n: int) -> DiffRow:
    return row("added", {"uid": "u1", "blob": "x" * n})


def test_event_size_limit_exact() -> None:
    sync = spec(fields=["blob"])
    overhead = len(build_event(sync, _blob_event(0), SYNC_UUID).payload)
    fits = MAX_EVENT_BYTES - overhead
    ok = build_event(sync, _blob_event(fits), SYNC_UUID)
    assert len(ok.payload) == MAX_EVENT_BYTES == 32_000
    with pytest.raises(RowRejected, match="32,001 bytes"):
        build_event(sync, _blob_event(fits + 1), SYNC_UUID)


def test_oversized_event_is_rejected_outcome() -> None:
    reason = rejection(spec(fields=["blob"]), _blob_event(40_000))
    assert "32,000" in reason


def test_size_counts_utf8_bytes() -> None:
    sync = spec(fields=["blob"])
    emoji = row("added", {"uid": "u1", "blob": "🎉" * 8_100})  # 8,100 characters, 32,400 bytes
    with pytest.raises(RowRejected, match="bytes"):
        build_event(sync, emoji, SYNC_UUID)


def test_payload_is_strict_json_with_raw_unicode() -> None:
    frame = pl.DataFrame(
        {
            "uid": ["u1"],
            "score": [float("nan")],
            "inf": [float("inf")],
            "name": ["Zoë 🎉"],
            "tags": [["a", "b"]],
            "addr": [{"city": "Zürich", "zip": 8000}],
            "amount": pl.Series([Decimal("12345678901234567890.12")], dtype=pl.Decimal(30, 2)),
        }
    )
    (content,) = row_contents(frame, ["addr", "amount", "inf", "name", "score", "tags", "uid"])
    sync = spec(fields=["score", "inf", "name", "tags", "addr", "amount"])
    built = build_event(sync, DiffRow("k", "added", None, None, content), SYNC_UUID)
    assert isinstance(built, Event)
    assert "Zoë 🎉".encode() in built.payload
    assert b"\\u" not in built.payload
    assert b"12345678901234567890.12" in built.payload
    msg = strict(built.payload)
    assert msg["properties"] == {
        "score": None,
        "inf": None,
        "name": "Zoë 🎉",
        "tags": ["a", "b"],
        "addr": {"city": "Zürich", "zip": 8000},
        "amount": pytest.approx(12345678901234567890.12),
    }


def test_event_record_fields() -> None:
    r = row("removed", None, USER, before_gen=1)
    built = build_event(spec(), r, SYNC_UUID)
    assert (built.row, built.type, built.name) == (r, "track", "User Deleted Account")
    assert built.message_id == message_id_for(SYNC_UUID, r)


@pytest.mark.parametrize(
    ("number", "user_id"), [("42.00", "42"), ("1e3", "1000"), ("1.5", "1.5"), ("1e999999999", "1e999999999")]
)
def test_ids_from_numbers_as_their_digits_or_their_text(number: str, user_id: str) -> None:
    sync = SyncSpec(name="s", model="m", type="identify", user_id="uid")
    row = DiffRow(key="1", kind="added", before_gen=None, before=None, after='{"uid":' + number + "}")
    assert json.loads(build_event(sync, row, SYNC_UUID).payload)["userId"] == user_id  # 1e999999999: no huge int
