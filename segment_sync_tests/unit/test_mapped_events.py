"""Mapped events row by row: nested fields, static values, templates, context, integrations, nulls left out,
epoch timestamps, and changed events that say what changed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from segment_sync.events.row_builder import DiffRow, build_event, build_outcomes
from segment_sync.spec import SyncSpec
from segment_sync.values.encoding import dumps

SYNC_UUID = "0b9d6c1e-4f3a-4c55-9d0e-3c1f2a4b5c6d"
EVENTS = {"added": "Signed Up", "changed": "Changed", "removed": "Left"}


def track(**overrides: Any) -> SyncSpec:
    return SyncSpec(**{"name": "s", "model": "m", "type": "track", "user_id": "uid", "events": EVENTS, **overrides})


def identify(**overrides: Any) -> SyncSpec:
    return SyncSpec(**{"name": "s", "model": "m", "type": "identify", "user_id": "uid", **overrides})


def content(values: dict[str, Any] | None) -> str | None:
    return None if values is None else dumps(values).decode()


def event(sync: SyncSpec, kind: str, after: dict[str, Any] | None, before: dict[str, Any] | None = None) -> Any:
    row = DiffRow("k", kind, None if before is None else 1, content(before), content(after))  # type: ignore[arg-type]
    return orjson.loads(build_event(sync, row, SYNC_UUID, removed_at="2026-12-01T10:00:00Z").payload)


def rejected(sync: SyncSpec, after: dict[str, Any]) -> str | None:
    (outcome,) = build_outcomes(sync, [DiffRow("k", "added", None, None, content(after))], SYNC_UUID, initial=False)
    return outcome.rejected


USER = {"uid": "u1", "city": "Lyon", "zip": "69001", "first": "Ada", "last": "Lovelace", "plan": "pro"}


def test_dotted_names_nest_and_escaped_dots_stay_literal() -> None:
    sync = track(fields={"address.city": "city", "plan": "plan", "address.zip": "zip", "utm\\.source": "plan"})
    assert event(sync, "added", USER)["properties"] == {
        "address": {"city": "Lyon", "zip": "69001"},
        "plan": "pro",
        "utm.source": "pro",
    }


def test_static_values_and_templates() -> None:
    sync = identify(
        fields={
            "plan_source": {"static": "warehouse"},
            "limits": {"static": {"seats": 5, "tags": ["a"]}},
            "full_name": {"template": "{first} {last}"},
            "label": {"template": "{{{plan}}}: {seats} seats, {ok} {at}"},
            "constant": {"template": "no columns"},
        }
    )
    row = {**USER, "seats": 12.50, "ok": True, "at": "2026-01-01T00:00:00Z"}
    assert event(sync, "added", row)["traits"] == {
        "plan_source": "warehouse",
        "limits": {"seats": 5, "tags": ["a"]},
        "full_name": "Ada Lovelace",
        "label": "{pro}: 12.5 seats, true 2026-01-01T00:00:00Z",
        "constant": "no columns",
    }


def test_a_template_is_null_only_when_every_column_it_reads_is() -> None:
    sync = identify(fields={"full_name": {"template": "{first} {last}"}})
    assert event(sync, "added", {"uid": "u1", "first": "Ada", "last": None})["traits"] == {"full_name": "Ada "}
    assert event(sync, "added", {"uid": "u1", "first": None, "last": None})["traits"] == {"full_name": None}
    json_text = {"uid": "u1", "first": {"a": [1, "x"]}, "last": [True]}  # JSON values as their text
    assert event(sync, "added", json_text)["traits"] == {"full_name": '{"a":[1,"x"]} [true]'}


def test_context_fields_follow_the_library_and_integrations_come_last() -> None:
    sync = track(
        fields=["plan"],
        context={"ip": "ip", "locale": {"static": "fr-FR"}, "traits.email": "email", "groupId": "account"},
        integrations={"All": False, "Mixpanel": True, "Amplitude": {"session_id": 1}},
    )
    message = event(sync, "added", {**USER, "ip": "10.0.0.1", "email": "ada@x.io", "account": 42})
    assert list(message)[-2:] == ["context", "integrations"]
    assert message["context"] == {
        "library": {"name": "segment-sync", "version": message["context"]["library"]["version"]},
        "ip": "10.0.0.1",
        "locale": "fr-FR",
        "traits": {"email": "ada@x.io"},
        "groupId": 42,
    }
    assert message["integrations"] == {"All": False, "Mixpanel": True, "Amplitude": {"session_id": 1}}


def test_integrations_from_a_json_column() -> None:
    sync = track(fields=["plan"], integrations="dest")
    assert event(sync, "added", {**USER, "dest": {"All": False}})["integrations"] == {"All": False}
    assert "integrations" not in event(sync, "added", {**USER, "dest": None})
    assert rejected(sync, {**USER, "dest": "Mixpanel"}) == (
        "integrations column 'dest' holds a string, not a JSON object of destinations"
    )
    assert rejected(sync, {**USER, "dest": [1]}) == (
        "integrations column 'dest' holds a JSON array, not a JSON object of destinations"
    )


def test_nulls_are_sent_by_default_and_left_out_when_asked() -> None:
    fields = {"plan": "plan", "address.city": "city", "address.zip": "zip", "name": {"template": "{first}"}}
    row = {"uid": "u1", "plan": None, "city": None, "zip": None, "first": None, "ip": None}
    sent = event(track(fields=fields, context={"ip": "ip"}), "added", row)
    assert sent["properties"] == {"plan": None, "address": {"city": None, "zip": None}, "name": None}
    assert sent["context"]["ip"] is None
    left_out = event(track(fields=fields, context={"ip": "ip"}, omit_nulls=True), "added", row)
    assert left_out["properties"] == {}
    assert "ip" not in left_out["context"]
    partly = event(track(fields=fields, omit_nulls=True), "added", {**row, "zip": "69001"})
    assert partly["properties"] == {"address": {"zip": "69001"}}


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [
        ("s", 1704103200, "2024-01-01T10:00:00.000Z"),
        ("s", 1704103200.1239, "2024-01-01T10:00:00.123Z"),
        ("s", "1704103200", "2024-01-01T10:00:00.000Z"),
        ("s", -1, "1969-12-31T23:59:59.000Z"),
        ("s", -62135596800, "0001-01-01T00:00:00.000Z"),
        ("ms", 1704103200123, "2024-01-01T10:00:00.123Z"),
        ("ms", 1704103200123.9, "2024-01-01T10:00:00.123Z"),
        ("ms", 253402300799999, "9999-12-31T23:59:59.999Z"),
        ("ms", 0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_epoch_timestamps(unit: str, value: Any, expected: str) -> None:
    sync = track(fields=["plan"], timestamp="ts", timestamp_unit=unit)
    assert event(sync, "added", {**USER, "ts": value})["timestamp"] == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2024-01-01", "holds '2024-01-01', not a number of seconds since 1970"),
        (True, "holds a boolean, not a number of seconds since 1970"),
        (253402300800, "holds 253402300800, seconds since 1970 outside years 1 to 9999"),
        (1e300, "outside years 1 to 9999"),
    ],
)
def test_epoch_timestamps_that_are_not_times_are_rejected(value: Any, says: str) -> None:
    reason = rejected(track(fields=["plan"], timestamp="ts", timestamp_unit="s"), {**USER, "ts": value})
    assert reason is not None and reason.startswith("timestamp column 'ts' ") and says in reason


def test_a_removed_rows_time_is_still_the_snapshots() -> None:
    sync = track(fields=["plan"], timestamp="ts", timestamp_unit="s")
    assert event(sync, "removed", None, {**USER, "ts": 0})["timestamp"] == "2026-12-01T10:00:00.000Z"


def test_a_changed_event_says_which_fields_changed_and_what_they_were() -> None:
    sync = track(
        fields={"plan": "plan", "address.city": "city", "address.zip": "zip", "name": {"template": "{first} {last}"}},
        changed_fields="changed_fields",
        previous_values="previous",
    )
    before = {**USER, "last": "Byron", "city": None}
    after = {**USER, "city": "Paris"}
    message = event(sync, "changed", after, before)
    assert message["properties"] == {
        "plan": "pro",
        "address": {"city": "Paris", "zip": "69001"},
        "name": "Ada Lovelace",
        "changed_fields": ["address.city", "name"],
        "previous": {"address": {"city": None}, "name": "Ada Byron"},
    }
    assert "changed_fields" not in event(sync, "added", after)["properties"]
    again = event(sync, "changed", after, before)
    assert again == message, "a retry of the same change carries the same lists and messageId"


def test_only_ids_changed_gives_an_empty_list_and_identify_traits_carry_it() -> None:
    sync = identify(fields=["plan"], changed_fields="what_changed", omit_nulls=True)
    message = event(sync, "changed", {**USER, "uid": "u2"}, USER)
    assert message["traits"] == {"plan": "pro", "what_changed": []}
    only_previous = identify(fields=["plan"], previous_values="was")
    assert event(only_previous, "changed", {**USER, "plan": None}, USER)["traits"] == {
        "plan": None,
        "was": {"plan": "pro"},
    }


def test_a_change_of_only_the_number_text_counts_as_the_diff_counts_it() -> None:
    sync = track(fields=["price"], changed_fields="changed")
    before = '{"price":1.50,"uid":"u1"}'
    after = '{"price":1.5,"uid":"u1"}'
    row = DiffRow("k", "changed", 1, before, after)
    assert orjson.loads(build_event(sync, row, SYNC_UUID).payload)["properties"]["changed"] == ["price"]
