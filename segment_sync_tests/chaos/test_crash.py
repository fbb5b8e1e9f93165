"""A delivery killed with SIGKILL part way loses nothing and re-sends only what was not acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from segment_sync.storage.state import SyncState
from segment_sync.warehouse_engine.state_tables import StateTables
from segment_sync_tests.support.segment_emulator import Fault
from segment_sync_tests.support.sync_runs import make_definitions, run_sync

PROJECT = {
    "models": [{"name": "m", "table": "src", "primary_key": "id"}],
    "syncs": [
        {
            "name": "t",
            "model": "m",
            "type": "track",
            "user_id": "uid",
            "fields": ["v"],
            "events": {"added": "Added"},
            "send_initial": True,
        }
    ],
}
# Batches of 9 events of about 3,500 bytes, one in flight, in order: batch 3 hangs.
SMALL_BATCHES = {"max_batch_bytes": 33_000, "gzip": False, "max_in_flight": 1}
ACK = '{"success":true}'


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_mid_delivery_then_rerun(duckdb_warehouse, state_dir, emulator, instance, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute(
        "create table src as select i as id, 'user-' || i as uid, repeat('v', 3300) as v from range(1, 41) t(i)"
    )
    # Two batches are acknowledged; the third is recorded by "Segment" but its answer never arrives.
    emulator.inject(
        Fault(status=200, body=ACK, record_first=True),
        Fault(status=200, body=ACK, record_first=True),
        Fault(status=200, body=ACK, record_first=True, delay=120),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segment_sync_tests.support.sync_process",
            json.dumps(PROJECT),
            "t",
            json.dumps(SMALL_BATCHES),
        ],
        env=os.environ.copy(),
    )
    try:
        _wait_for(lambda: len(emulator.requests) >= 3 and emulator.requests[2].fault is not None)
        _wait_for(lambda: len(emulator.accepted) >= 3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    batches = [r.json()["batch"] for r in emulator.requests[:3]]
    acked = {e["messageId"] for batch in batches[:2] for e in batch}
    unacked = {e["messageId"] for e in batches[2]}
    journal = (state_dir / "syncs" / "t" / "journal.jsonl").read_bytes()
    assert journal.endswith(b"\n") and len(journal.splitlines()) == len(acked)  # no torn or extra line

    run = run_sync(make_definitions(PROJECT, segment=SMALL_BATCHES), "t", instance)
    assert run.success, run.failure_messages()
    unique = emulator.unique_events()
    assert len(unique) == 40 and sorted(e["userId"] for e in unique.values()) == sorted(
        f"user-{i}" for i in range(1, 41)
    )
    resent = [e["messageId"] for r in emulator.requests[3:] if r.status == 200 for e in r.json()["batch"]]
    assert acked.isdisjoint(resent)  # nothing acknowledged is sent again
    assert unacked <= set(resent)  # the ambiguous batch is re-sent with the same messageIds
    assert emulator.duplicates == len(unacked)
    store = SyncState(state_dir / "syncs" / "t", "t")
    assert store.delivered_row_count() == 40 and not store.journal_path.exists()


def test_a_second_run_while_one_is_delivering_sends_nothing(
    duckdb_warehouse, state_dir, emulator, instance, monkeypatch
):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute("create table src as select i as id, 'user-' || i as uid, 'v' as v from range(1, 6) t(i)")
    emulator.inject(Fault(status=200, body=ACK, record_first=True, delay=3))  # the first run is mid-delivery
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segment_sync_tests.support.sync_process",
            json.dumps(PROJECT),
            "t",
            json.dumps(SMALL_BATCHES),
        ],
        env=os.environ.copy(),
    )
    try:
        _wait_for(lambda: len(emulator.requests) >= 1)
        second = run_sync(make_definitions(PROJECT, segment=SMALL_BATCHES), "t", instance)
        assert not second.success
        assert "sync 't' is already running in another process" in second.failure_messages()[0]
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert len(emulator.unique_events()) == 5 and emulator.duplicates == 0


@pytest.mark.postgres
@pytest.mark.parametrize("first_run", [True, False], ids=["first-run", "later-run"])
def test_sigkill_mid_delivery_on_the_warehouse_engine(
    first_run, postgres_warehouse, state_dir, emulator, instance, monkeypatch
):
    """A first run's notes go straight into the delivered rows, a later run's through the journal: both survive."""
    monkeypatch.setenv("WAREHOUSE_URL", postgres_warehouse.url)
    schema = f"ss_{uuid.uuid4().hex[:10]}"
    warehouse = {"state_schema": schema, "lease_seconds": 6}
    project = {**PROJECT, "engine": "warehouse"}
    definitions = make_definitions(project, segment=SMALL_BATCHES, warehouse=warehouse)
    engine = sa.create_engine(postgres_warehouse.url)
    tables = StateTables(schema)
    expected = [f"user-{i}" for i in range(1, 41)]
    postgres_warehouse.execute("create table src (id int primary key, uid text, v text)")
    if not first_run:  # 40 rows delivered first, so the next 40 are within the guard
        postgres_warehouse.execute("insert into src select i, 'user-' || i, 'v' from generate_series(41, 80) i")
        assert run_sync(definitions, "t", instance).success
        expected += [f"user-{i}" for i in range(41, 81)]
    postgres_warehouse.execute(
        "insert into src select i, 'user-' || i, repeat('v', 3300) from generate_series(1, 40) i"
    )
    start = len(emulator.requests)

    def count(table: sa.Table) -> int:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name, schema=schema):
                return 0
            return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.sync == "t")).scalar_one()

    notes = tables.delivered if first_run else tables.journal
    emulator.inject(
        Fault(status=200, body=ACK, record_first=True),
        Fault(status=200, body=ACK, record_first=True),
        Fault(status=200, body=ACK, record_first=True, delay=120),
    )
    command = [sys.executable, "-m", "segment_sync_tests.support.sync_process", json.dumps(project), "t"]
    process = subprocess.Popen([*command, json.dumps(SMALL_BATCHES), json.dumps(warehouse)], env=os.environ.copy())
    try:
        _wait_for(lambda: len(emulator.requests) >= start + 3 and emulator.requests[start + 2].fault is not None)
        _wait_for(lambda: count(notes) == 18)  # the two acknowledged batches, noted by the run's thread
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    batches = [r.json()["batch"] for r in emulator.requests[start : start + 3]]
    acked = {e["messageId"] for batch in batches[:2] for e in batch}
    unacked = {e["messageId"] for e in batches[2]}

    blocked = run_sync(definitions, "t", instance)  # the dead run's lease has not expired yet
    assert not blocked.success and "is already running" in " ".join(blocked.failure_messages())
    time.sleep(6.5)
    run = run_sync(definitions, "t", instance)
    assert run.success, run.failure_messages()
    unique = emulator.unique_events()
    assert sorted(e["userId"] for e in unique.values()) == sorted(expected)
    resent = [e["messageId"] for r in emulator.requests[start + 3 :] if r.status == 200 for e in r.json()["batch"]]
    assert acked.isdisjoint(resent) and unacked <= set(resent)
    assert emulator.duplicates == len(unacked)
    assert count(tables.journal) == 0
    with engine.connect() as conn:
        delivered = sa.select(sa.func.count(tables.delivered.c.hash)).where(tables.delivered.c.sync == "t")
        assert conn.execute(delivered).scalar_one() == len(expected)
    engine.dispose()
    postgres_warehouse.execute(f"drop schema {schema} cascade")
