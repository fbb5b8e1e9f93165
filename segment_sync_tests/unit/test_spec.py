"""The YAML model of models and syncs: names, cross-references and per-type rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from segment_sync.field_mapping import Column
from segment_sync.spec import EventNames, ModelSpec, ProjectSpec, SyncSpec


def model(**overrides: Any) -> dict[str, Any]:
    return {"name": "users", "sql": "select * from users", "primary_key": "user_id", **overrides}


def sync(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "users_lifecycle",
        "model": "users",
        "type": "track",
        "user_id": "user_id",
        "events": {"added": "User Signed Up"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["users", "users_2", "a", "0", "_", "model_with_many_parts_9"])
def test_valid_names(name: str) -> None:
    assert ModelSpec(**model(name=name)).name == name
    assert SyncSpec(**sync(name=name)).name == name


@pytest.mark.parametrize("name", ["Users", "users-lifecycle", "users lifecycle", "", "users.x", "üsers", "users\n"])
def test_invalid_model_name(name: str) -> None:
    with pytest.raises(ValidationError, match="not a valid name"):
        ModelSpec(**model(name=name))


@pytest.mark.parametrize("name", ["Lifecycle", "life-cycle", "", "sync/1"])
def test_invalid_sync_name(name: str) -> None:
    with pytest.raises(ValidationError, match="not a valid name"):
        SyncSpec(**sync(name=name))


# --- models ----------------------------------------------------------------------------------------


def test_sql_and_table_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'sql' or 'table'"):
        ModelSpec(name="users", sql="select 1", table="analytics.users", primary_key="id")
    with pytest.raises(ValidationError, match="exactly one of 'sql' or 'table'"):
        ModelSpec(name="users", primary_key="id")


def test_query_from_sql_or_table() -> None:
    assert ModelSpec(**model()).query == "select * from users"
    assert ModelSpec(name="users", table="analytics.users", primary_key="id").query == "select * from analytics.users"


def test_key_columns_single_and_composite() -> None:
    assert ModelSpec(**model(primary_key="user_id")).key_columns == ["user_id"]
    assert ModelSpec(**model(primary_key=["account_id", "user_id"])).key_columns == ["account_id", "user_id"]


@pytest.mark.parametrize("key", [[], "", ["a", ""]])
def test_empty_primary_key_rejected(key: Any) -> None:
    with pytest.raises(ValidationError, match="at least one column"):
        ModelSpec(**model(primary_key=key))


def test_primary_key_column_twice_rejected() -> None:
    with pytest.raises(ValidationError, match="lists a column twice"):
        ModelSpec(**model(primary_key=["a", "b", "a"]))


@pytest.mark.parametrize("typo", ["primary_keys", "query", "tabel", "schedule"])
def test_unknown_model_keys_rejected(typo: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelSpec(**model(**{typo: "x"}))


# --- syncs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("typo", ["send_intial", "userid", "event", "field", "timestamp_column", "messageId"])
def test_unknown_sync_keys_rejected(typo: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SyncSpec(**sync(**{typo: "x"}))


def test_unknown_event_kind_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SyncSpec(**sync(events={"add": "User Signed Up"}))


def test_unknown_type_rejected() -> None:
    with pytest.raises(ValidationError, match="track"):
        SyncSpec(**sync(type="page"))


def test_track_without_events_rejected() -> None:
    with pytest.raises(ValidationError, match="needs 'events'"):
        SyncSpec(**sync(events=None))
    with pytest.raises(ValidationError, match="needs 'events'"):
        SyncSpec(**sync(events={}))
    with pytest.raises(ValidationError, match="needs 'events'"):
        SyncSpec(**sync(events={"added": None, "changed": None}))


def test_track_with_only_one_event_name() -> None:
    spec = SyncSpec(**sync(events={"removed": "User Deleted Account"}))
    assert spec.events == EventNames(removed="User Deleted Account")
    assert spec.events.for_kind("removed") == "User Deleted Account"
    assert spec.events.for_kind("added") is None
    assert spec.events.for_kind("changed") is None


@pytest.mark.parametrize("kind", ["audience", "identify"])
def test_events_only_for_track(kind: str) -> None:
    with pytest.raises(ValidationError, match="'events' only applies to track"):
        SyncSpec(**sync(type=kind))


def test_group_without_group_id_rejected() -> None:
    with pytest.raises(ValidationError, match="needs 'group_id'"):
        SyncSpec(**sync(type="group", events=None))


@pytest.mark.parametrize("kind", ["track", "audience", "identify"])
def test_group_id_on_non_group_rejected(kind: str) -> None:
    events = {"added": "X"} if kind == "track" else None
    with pytest.raises(ValidationError, match="'group_id' only applies to group syncs"):
        SyncSpec(**sync(type=kind, events=events, group_id="account_id"))


def test_group_sync() -> None:
    spec = SyncSpec(**sync(type="group", events=None, group_id="account_id", fields=["plan"]))
    assert spec.group_id == "account_id"
    assert spec.sent_columns == ["account_id", "plan", "user_id"]


@pytest.mark.parametrize("kind", ["identify", "group"])
def test_send_initial_on_identify_and_group_rejected(kind: str) -> None:
    extra = {"group_id": "account_id"} if kind == "group" else {}
    with pytest.raises(ValidationError, match="always send the initial set"):
        SyncSpec(**sync(type=kind, events=None, send_initial=True, **extra))


def test_send_initial_false_explicit_on_identify_is_fine() -> None:
    assert SyncSpec(**sync(type="identify", events=None, send_initial=False)).sends_initial is True


def test_sends_initial_per_type() -> None:
    assert SyncSpec(**sync()).sends_initial is False
    assert SyncSpec(**sync(send_initial=True)).sends_initial is True
    assert SyncSpec(**sync(type="audience", events=None)).sends_initial is False
    assert SyncSpec(**sync(type="audience", events=None, send_initial=True)).sends_initial is True
    assert SyncSpec(**sync(type="identify", events=None)).sends_initial is True
    assert SyncSpec(**sync(type="group", events=None, group_id="g")).sends_initial is True


def test_neither_user_id_nor_anonymous_id_rejected() -> None:
    with pytest.raises(ValidationError, match="at least one of 'user_id' or 'anonymous_id'"):
        SyncSpec(**sync(user_id=None))


def test_anonymous_id_alone_is_enough() -> None:
    spec = SyncSpec(**sync(user_id=None, anonymous_id="anon_id"))
    assert spec.user_id is None
    assert spec.sent_columns == ["anon_id"]


def test_fields_list_means_same_names() -> None:
    spec = SyncSpec(**sync(fields=["email", "plan", "a.b"]))
    assert spec.field_tree == {"email": Column("email"), "plan": Column("plan"), "a.b": Column("a.b")}


def test_fields_dict_maps_names_to_columns() -> None:
    spec = SyncSpec(**sync(fields={"plan": "plan_name", "email": "email_address"}))
    assert spec.field_tree == {"plan": Column("plan_name"), "email": Column("email_address")}


def test_fields_default_empty() -> None:
    assert SyncSpec(**sync()).field_tree == {}


@pytest.mark.parametrize("fields", [[""], {"": "col"}, {"name": ""}])
def test_empty_field_names_rejected(fields: Any) -> None:
    with pytest.raises(ValidationError, match="non-empty strings"):
        SyncSpec(**sync(fields=fields))


def test_sent_columns_sorted_unique_and_complete() -> None:
    spec = SyncSpec(
        **sync(
            user_id="user_id",
            anonymous_id="anon_id",
            fields={"plan": "plan_name", "id": "user_id", "email": "email"},
            timestamp="updated_at",
            message_id="event_uuid",
        )
    )
    assert spec.sent_columns == ["anon_id", "email", "event_uuid", "plan_name", "updated_at", "user_id"]


def test_sent_columns_do_not_include_unsent_or_key_columns() -> None:
    spec = SyncSpec(**sync(fields={"plan": "plan_name"}))
    assert spec.sent_columns == ["plan_name", "user_id"]


def test_full_example_from_the_issue() -> None:
    spec = SyncSpec(
        name="users_lifecycle",
        model="users",
        type="track",
        user_id="user_id",
        anonymous_id="anon_id",
        fields={"plan": "plan_name", "email": "email"},
        events={"added": "User Signed Up", "changed": "User Changed Plan", "removed": "User Deleted Account"},
        send_initial=False,
        timestamp="updated_at",
        message_id="event_uuid",
        schedule="*/15 * * * *",
    )
    assert spec.events is not None
    assert [spec.events.for_kind(k) for k in ("added", "changed", "removed")] == [
        "User Signed Up",
        "User Changed Plan",
        "User Deleted Account",
    ]
    assert spec.schedule == "*/15 * * * *"


def test_specs_are_frozen() -> None:
    spec = SyncSpec(**sync())
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


# --- project ---------------------------------------------------------------------------------------


def test_project_links_syncs_to_models() -> None:
    project = ProjectSpec(models=[model(), model(name="accounts")], syncs=[sync(), sync(name="s2", model="accounts")])
    assert project.model("accounts").name == "accounts"
    assert [s.model for s in project.syncs] == ["users", "accounts"]


def test_duplicate_model_names_rejected() -> None:
    with pytest.raises(ValidationError, match="two models are named 'users'"):
        ProjectSpec(models=[model(), model(sql="select 2")], syncs=[])


def test_duplicate_sync_names_rejected() -> None:
    with pytest.raises(ValidationError, match="two syncs are named 'users_lifecycle'"):
        ProjectSpec(models=[model()], syncs=[sync(), sync(type="identify", events=None)])


def test_sync_of_unknown_model_rejected() -> None:
    with pytest.raises(ValidationError, match="sync 'users_lifecycle' reads model 'user', which is not defined"):
        ProjectSpec(models=[model()], syncs=[sync(model="user")])


def test_unknown_project_key_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ProjectSpec(models=[model()], syncs=[], sync=[])  # type: ignore[call-arg]


def test_error_names_the_sync() -> None:
    with pytest.raises(ValidationError) as info:
        ProjectSpec(models=[model()], syncs=[sync(name="my_sync", type="group", events=None)])
    assert "sync 'my_sync'" in str(info.value)
