"""Mappings in a component's defs.yaml: they load as written, and a mistake is an error naming the file and field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dagster.components.testing import create_defs_folder_sandbox

from segment_sync import SegmentSyncComponent
from segment_sync.field_mapping import Column, Static, Template

MODELS = [{"name": "users", "table": "analytics.users", "primary_key": "user_id"}]
MAPPED = {
    "name": "lifecycle",
    "model": "users",
    "type": "track",
    "user_id": "user_id",
    "events": {"added": "Signed Up", "changed": "Changed"},
    "fields": {
        "address.city": "city",
        "utm\\.source": "source",
        "plan_source": {"static": "warehouse"},
        "zip": {"static": "01234"},
        "full_name": {"template": "{first} {last}"},
    },
    "context": {"ip": "ip", "traits.email": "email"},
    "integrations": {"All": False, "Mixpanel": True},
    "omit_nulls": True,
    "timestamp": "signed_up",
    "timestamp_unit": "ms",
    "changed_fields": "changed_fields",
    "previous_values": "previous",
}


def _components(attributes: dict[str, Any]) -> Iterator[SegmentSyncComponent]:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert defs.resolve_job_def("sync_lifecycle")
            yield component


def test_mappings_load_from_yaml_as_written() -> None:
    [component] = _components({"models": MODELS, "syncs": [MAPPED]})
    [sync] = component.syncs
    assert sync.field_tree == {
        "address": {"city": Column("city")},
        "utm.source": Column("source"),
        "plan_source": Static("warehouse"),
        "zip": Static("01234"),
        "full_name": Template((Column("first"), " ", Column("last"))),
    }
    assert sync.context_tree == {"ip": Column("ip"), "traits": {"email": Column("email")}}
    assert (sync.integrations, sync.omit_nulls, sync.timestamp_unit) == ({"All": False, "Mixpanel": True}, True, "ms")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"fields": {"a": "x", "a.b": "y"}}, "sync 'lifecycle': fields: 'a.b' and 'a' both set 'a'"),
        ({"fields": {"n": {"template": "{first"}}}, "fields.n: the template has an unclosed '{'"),
        ({"fields": {"n": {"statik": "x"}}}, "fields.n: {'statik': 'x'} is not a value to send"),
        ({"integrations": {"All": "no"}}, "integrations.All: 'no' is neither true"),
        ({"timestamp_unit": "seconds"}, "timestamp_unit"),
        ({"changed_fields": "plan", "fields": ["plan"]}, "'changed_fields' is 'plan', which a field in 'fields'"),
    ],
)
def test_a_bad_mapping_is_an_error_naming_the_file_and_field(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(Exception) as info:
        list(_components({"models": MODELS, "syncs": [{**MAPPED, **overrides}]}))
    text = "".join(str(e) for e in _chain(info.value))
    assert says in text
    assert "defs.yaml" in text


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__
