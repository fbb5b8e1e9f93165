"""Mappings through the assets on both engines: nested fields, static values, templates, context, integrations,
nulls left out, epoch timestamps, and changed events that say what changed, byte for byte alike."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from segment_sync_tests.support.segment_emulator import Fault, SegmentEmulator
from segment_sync_tests.support.sync_runs import make_definitions, run_sync
from segment_sync_tests.support.warehouses import Warehouse

MODEL = {"name": "m", "table": "users", "primary_key": "id"}
MAPPED = {
    "name": "t",
    "model": "m",
    "type": "track",
    "user_id": "uid",
    "events": {"added": "Added", "changed": "Changed", "removed": "Removed"},
    "send_initial": True,
    "fields": {
        "plan": "plan",
        "address.city": "city",
        "utm\\.source": {"static": "warehouse"},
        "full_name": {"template": "{first} {last}"},
    },
    "context": {"ip": "ip", "locale": {"static": "en-US"}},
    "integrations": "dest",
    "omit_nulls": True,
    "timestamp": "seen_at",
    "timestamp_unit": "s",
    "changed_fields": "changed_fields",
    "previous_values": "previous",
}
TRAITS = {
    "name": "p",
    "model": "m",
    "type": "identify",
    "user_id": "uid",
    "fields": {"plan": "plan", "name.first": "first"},
    "changed_fields": "changed_traits",
}


def _definitions(warehouse: Warehouse, engine: str) -> dg.Definitions:
    warehouse.execute(
        "create table users (id integer, uid varchar, first varchar, last varchar, city varchar, plan varchar,"
        " ip varchar, dest json, seen_at bigint)",
        "insert into users values (1, 'u1', 'Ada', 'Lovelace', 'Lyon', 'pro', '10.0.0.1', '{\"All\": false,"
        " \"Mixpanel\": true}', 1704103200), (2, 'u2', 'Grace', null, null, 'free', null, null, 1704103201)",
    )
    project = {"models": [MODEL], "syncs": [MAPPED, TRAITS], "engine": engine}
    return make_definitions(project, warehouse={"state_schema": f"ss_{uuid.uuid4().hex[:10]}"})


def _without_ids(events: list[dict]) -> list[dict]:
    """Events without what depends on the sync's own state (its messageIds), the package's version or the time."""
    return [
        {k: v for k, v in e.items() if k not in ("messageId", "context", "receivedAt")} | {"ctx": _context(e)}
        for e in events
    ]


def _as_sent(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "receivedAt"}


def _context(event: dict) -> dict:
    return {k: v for k, v in event["context"].items() if k != "library"}


@pytest.mark.parametrize("engine", ["polars", "warehouse"])
def test_mapped_events_through_the_assets(
    engine: str,
    duckdb_warehouse: Warehouse,
    state_dir: Path,
    emulator: SegmentEmulator,
    instance: dg.DagsterInstance,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    defs = _definitions(duckdb_warehouse, engine)
    for sync in ("t", "p"):
        run = run_sync(defs, sync, instance)
        assert run.success, run.failure_messages()
    added = sorted(emulator.events_named("Added"), key=lambda e: e["userId"])
    assert _without_ids(added) == [
        {
            "type": "track",
            "event": "Added",
            "userId": "u1",
            "properties": {
                "plan": "pro",
                "address": {"city": "Lyon"},
                "utm.source": "warehouse",
                "full_name": "Ada Lovelace",
            },
            "timestamp": "2024-01-01T10:00:00.000Z",
            "integrations": {"All": False, "Mixpanel": True},
            "ctx": {"ip": "10.0.0.1", "locale": "en-US"},
        },
        {
            "type": "track",
            "event": "Added",
            "userId": "u2",
            "properties": {"plan": "free", "utm.source": "warehouse", "full_name": "Grace "},
            "timestamp": "2024-01-01T10:00:01.000Z",
            "ctx": {"locale": "en-US"},
        },
    ]
    identifies = sorted((e for e in emulator.accepted if e["type"] == "identify"), key=lambda e: e["userId"])
    assert [e["traits"] for e in identifies] == [
        {"plan": "pro", "name": {"first": "Ada"}},
        {"plan": "free", "name": {"first": "Grace"}},
    ]

    duckdb_warehouse.execute("update users set ip = '10.9.9.9', dest = null, seen_at = 1800000000 where id = 1")
    emulator.reset()
    assert run_sync(defs, "t", instance).success
    assert emulator.accepted == [], "context, integrations and the timestamp are sent, not compared"

    duckdb_warehouse.execute(
        "update users set city = 'Paris', plan = 'team' where id = 1", "update users set last = 'Hopper' where id = 2"
    )
    emulator.inject(*[Fault(500, record_first=True)] * 3)  # every attempt of the first run fails
    run_sync(defs, "t", instance)
    assert run_sync(defs, "t", instance).success
    changed = sorted(emulator.events_named("Changed"), key=lambda e: e["userId"])
    assert [e["properties"] for e in changed] == [
        {
            "plan": "team",
            "address": {"city": "Paris"},
            "utm.source": "warehouse",
            "full_name": "Ada Lovelace",
            "changed_fields": ["plan", "address.city"],
            "previous": {"plan": "pro", "address": {"city": "Lyon"}},
        },
        {
            "plan": "free",
            "utm.source": "warehouse",
            "full_name": "Grace Hopper",
            "changed_fields": ["full_name"],
            "previous": {"full_name": "Grace "},
        },
    ]
    assert changed[0]["context"]["ip"] == "10.9.9.9" and "integrations" not in changed[0]
    retried = [e for e in emulator.accepted if e.get("event") == "Changed"]
    first_sent = {e["messageId"]: _as_sent(e) for e in changed}
    assert len(retried) > len(changed), "the failed run's events were recorded, then sent again"
    assert all(_as_sent(e) == first_sent[e["messageId"]] for e in retried), "the same lists under the same messageId"

    assert run_sync(defs, "p", instance).success
    traits = sorted((e for e in emulator.accepted if e["type"] == "identify"), key=lambda e: e["userId"])
    assert [e["traits"] for e in traits] == [
        {"plan": "team", "name": {"first": "Ada"}, "changed_traits": ["plan"]},
    ]


@pytest.mark.parametrize("engine", ["polars", "warehouse"])
def test_a_template_naming_a_missing_column_stops_the_sync_before_anything_is_sent(
    engine: str,
    duckdb_warehouse: Warehouse,
    state_dir: Path,
    emulator: SegmentEmulator,
    instance: dg.DagsterInstance,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute("create table users (id integer, uid varchar, first varchar)")
    duckdb_warehouse.execute("insert into users values (1, 'u1', 'Ada')")
    sync = {**TRAITS, "fields": {"full_name": {"template": "{first} {lsat}"}}}
    project = {"models": [MODEL], "syncs": [sync], "engine": engine}
    defs = make_definitions(project, warehouse={"state_schema": f"ss_{uuid.uuid4().hex[:10]}"})
    run = run_sync(defs, "p", instance)
    assert not run.success
    assert "sync 'p': model 'm' has no column 'lsat'; its columns are id, uid, first" in run.failure_messages()[0]
    assert emulator.requests == []
