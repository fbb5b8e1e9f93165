"""Mappings as declared: dotted and escaped names, static values, templates, context, integrations; their errors."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from pydantic import ValidationError

from segment_sync.field_mapping import Column, Static, Template, parse_template, target_path
from segment_sync.spec import SyncSpec


def sync(**overrides: Any) -> SyncSpec:
    base: dict[str, Any] = {
        "name": "lifecycle",
        "model": "users",
        "type": "track",
        "user_id": "user_id",
        "events": {"added": "Signed Up", "changed": "Changed"},
    }
    return SyncSpec(**{**base, **overrides})


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("plan", ("plan",)),
        ("address.city", ("address", "city")),
        ("a.b.c", ("a", "b", "c")),
        ("utm\\.source", ("utm.source",)),
        ("a\\\\b", ("a\\b",)),
        ("a\\\\.b", ("a\\", "b")),
        ("meta.utm\\.source", ("meta", "utm.source")),
        ("\\x", ("x",)),
        ("$set", ("$set",)),
    ],
)
def test_target_names_nest_at_dots_unless_escaped(name: str, path: tuple[str, ...]) -> None:
    assert target_path(name) == path


@pytest.mark.parametrize(
    ("name", "says"),
    [("a.", "empty part"), (".a", "empty part"), ("a..b", "empty part"), ("a\\", "ends with a backslash")],
)
def test_bad_target_names_are_errors(name: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        target_path(name)


def test_templates_split_into_text_and_columns() -> None:
    assert parse_template("{first} {last}") == Template((Column("first"), " ", Column("last")))
    assert parse_template("{{literal}} {x}!") == Template(("{literal} ", Column("x"), "!"))
    assert parse_template("plain") == Template(("plain",))
    assert parse_template("{a}{a}").columns == ["a"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{first", "unclosed '{' at character 1"),
        ("a } b", "'}' without '{' at character 3"),
        ("{}", "empty reference"),
        ("{ }", "empty reference"),
        ("{a{b}", "unclosed"),
    ],
)
def test_bad_templates_are_errors(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_template(text)


def test_fields_nest_keep_declared_order_and_read_their_columns() -> None:
    spec = sync(
        fields={
            "address.city": "city",
            "plan": "plan",
            "address.zip": "zip",
            "plan_source": {"static": "warehouse"},
            "full_name": {"template": "{first} {last}"},
        },
        context={"ip": "ip", "locale": {"static": "en-US"}},
        integrations="integrations_json",
        timestamp="updated_at",
    )
    assert spec.field_tree == {
        "address": {"city": Column("city"), "zip": Column("zip")},
        "plan": Column("plan"),
        "plan_source": Static("warehouse"),
        "full_name": Template((Column("first"), " ", Column("last"))),
    }
    assert spec.compared_columns == ["city", "first", "last", "plan", "user_id", "zip"]
    assert spec.sent_columns == [
        "city",
        "first",
        "integrations_json",
        "ip",
        "last",
        "plan",
        "updated_at",
        "user_id",
        "zip",
    ]


def test_a_static_value_may_be_any_json() -> None:
    spec = sync(fields={"a": {"static": {"x": [1, 2.5, None, True]}}, "b": {"static": None}})
    assert spec.field_tree == {"a": Static({"x": [1, 2.5, None, True]}), "b": Static(None)}
    assert spec.sent_columns == ["user_id"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"fields": {"a": "x", "a.b": "y"}}, "sync 'lifecycle': fields: 'a.b' and 'a' both set 'a'"),
        ({"fields": {"a.b": "y", "a": "x"}}, "fields: 'a' and 'a.b' both set 'a'"),
        ({"fields": {"a.b": "y", "a\\.b": "x", "a.b.c": "z"}}, "fields: 'a.b.c' and 'a.b' both set 'a.b'"),
        ({"fields": {"a..b": "x"}}, "sync 'lifecycle': fields.a..b: the name has an empty part"),
        ({"fields": {"n": {"template": "{first"}}}, "fields.n: the template has an unclosed '{'"),
        ({"fields": {"n": {"statik": 1}}}, "sync 'lifecycle': fields.n: {'statik': 1} is not a value to send"),
        ({"fields": {"n": {"static": 1, "template": "x"}}}, "is not a value to send; use a column name"),
        ({"context": {"ip": {"column": "ip"}}}, "context.ip: {'column': 'ip'} is not a value to send"),
        ({"context": {"library.name": "x"}}, "context.library is segment-sync's own"),
        ({"context": {"traits": "t", "traits.email": "e"}}, "context: 'traits.email' and 'traits' both set"),
        ({"integrations": {"All": False, "Mixpanel": "yes"}}, "integrations.Mixpanel: 'yes' is neither true"),
        ({"integrations": ""}, "integrations: name a column"),
        ({"fields": {"d": {"static": dt.date(2024, 1, 1)}}}, "is not a JSON value; quote it to send it as text"),
        ({"integrations": {"X": {"since": dt.date(2024, 1, 1)}}}, "integrations.X: datetime.date(2024, 1, 1) is not"),
        ({"timestamp_unit": "s"}, "'timestamp_unit' says how the timestamp column counts time; set 'timestamp'"),
        ({"timestamp": "t", "timestamp_unit": "us"}, "timestamp_unit"),
        ({"changed_fields": "changed", "events": {"added": "A"}}, "'changed_fields' describes changed events"),
        ({"type": "audience", "events": None, "previous_values": "p"}, "'previous_values' describes changed events"),
        ({"changed_fields": "plan", "fields": ["plan"]}, "'changed_fields' is 'plan', which a field in 'fields'"),
        ({"changed_fields": "x", "previous_values": "x"}, "two different names"),
        ({"changed_fields": " "}, "not empty"),
        ({"omit_null": True}, "omit_null"),
    ],
)
def test_bad_mappings_are_clear_errors(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        sync(**overrides)


def test_changed_fields_apply_to_track_and_identify() -> None:
    assert sync(changed_fields="changed_fields", previous_values="previous").previous_values == "previous"
    spec = SyncSpec(name="t", model="m", type="identify", user_id="u", fields=["plan"], changed_fields="changed")
    assert spec.changed_fields == "changed"
