"""The four sync types over two runs, through the real assets, on DuckDB, SQLite and PostgreSQL."""

from __future__ import annotations

import orjson
import polars as pl

from segment_sync_tests.support.segment_emulator import SegmentEmulator
from segment_sync_tests.support.sync_runs import WRITE_KEY, SyncRun, make_definitions, run_sync
from segment_sync_tests.support.warehouses import Warehouse

PROJECT = {
    "models": [{"name": "users", "table": "users", "primary_key": "id"}],
    "syncs": [
        {
            "name": "lifecycle",
            "model": "users",
            "type": "track",
            "user_id": "user_id",
            "anonymous_id": "anon_id",
            "fields": {"plan": "plan", "email": "email"},
            "events": {"added": "User Signed Up", "changed": "User Changed Plan", "removed": "User Deleted Account"},
            "send_initial": True,
            "timestamp": "updated_at",
        },
        {
            "name": "audience",
            "model": "users",
            "type": "audience",
            "user_id": "user_id",
            "fields": ["plan"],
            "send_initial": True,
        },
        {"name": "traits", "model": "users", "type": "identify", "user_id": "user_id", "fields": ["email", "plan"]},
        {
            "name": "accounts",
            "model": "users",
            "type": "group",
            "user_id": "user_id",
            "group_id": "account_id",
            "fields": {"seats": "seats"},
        },
        {"name": "quiet", "model": "users", "type": "track", "user_id": "user_id", "events": {"added": "Added"}},
    ],
}
SYNCS = [s["name"] for s in PROJECT["syncs"]]

SEED = [
    "create table users (id integer, user_id varchar(20), anon_id varchar(20), email varchar(100), "
    "plan varchar(20), account_id varchar(20), seats integer, last_seen varchar(30), updated_at timestamp)",
    "insert into users values "
    "(1, 'u1', 'a1', 'one@example.com', 'free', 'acct1', 5, 'mon', '2026-01-01 00:00:00'),"
    "(2, 'u2', null, 'two@example.com', 'pro', 'acct1', 5, 'mon', '2026-01-02 00:00:00'),"
    "(3, 'u3', 'a3', 'drei@example.com', 'team', 'acct2', 9, 'mon', '2026-01-03 00:00:00'),"
    "(9, null, null, 'nobody@example.com', 'free', 'acct2', 9, 'mon', '2026-01-09 00:00:00')",
]
CHANGE = [
    "insert into users values (4, 'u4', 'a4', 'vier@example.com', 'pro', 'acct3', 1, 'tue', '2026-02-04 00:00:00')",
    "update users set plan = 'team', updated_at = '2026-02-01 12:30:00' where id = 1",
    "update users set last_seen = 'wed' where id = 2",
    "delete from users where id = 3",
]


def _sent(emulator: SegmentEmulator, start: int) -> list[dict]:
    return emulator.accepted[start:]


def _names(events: list[dict]) -> list[tuple[str, str]]:
    return sorted((e.get("event") or e["type"], e["userId"]) for e in events)


def _run_all(definitions, instance, emulator) -> tuple[dict[str, list[dict]], dict[str, SyncRun]]:
    sent, runs = {}, {}
    for sync in SYNCS:
        before = len(emulator.accepted)
        runs[sync] = run_sync(definitions, sync, instance)
        assert runs[sync].success, runs[sync].failure_messages()
        sent[sync] = _sent(emulator, before)
    return sent, runs


def test_four_sync_types_over_two_runs(warehouse: Warehouse, state_dir, emulator, instance, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url)
    warehouse.execute(*SEED)
    definitions = make_definitions(PROJECT)

    sent, runs = _run_all(definitions, instance, emulator)
    assert _names(sent["lifecycle"]) == [("User Signed Up", "u1"), ("User Signed Up", "u2"), ("User Signed Up", "u3")]
    assert _names(sent["audience"]) == [("Segment Entered", "u1"), ("Segment Entered", "u2"), ("Segment Entered", "u3")]
    assert _names(sent["traits"]) == [("identify", "u1"), ("identify", "u2"), ("identify", "u3")]
    assert _names(sent["accounts"]) == [("group", "u1"), ("group", "u2"), ("group", "u3")]
    assert sent["quiet"] == []
    first = next(e for e in sent["lifecycle"] if e["userId"] == "u1")
    assert {k: v for k, v in first.items() if k not in ("messageId", "receivedAt", "context")} == {
        "type": "track",
        "event": "User Signed Up",
        "userId": "u1",
        "anonymousId": "a1",
        "properties": {"plan": "free", "email": "one@example.com"},
        "timestamp": "2026-01-01T00:00:00.000Z",
    }
    assert "anonymousId" not in next(e for e in sent["lifecycle"] if e["userId"] == "u2")
    group = next(e for e in sent["accounts"] if e["userId"] == "u3")
    assert (group["groupId"], group["traits"]) == ("acct2", {"seats": 9})
    for sync in ("lifecycle", "audience", "traits", "accounts"):
        meta = runs[sync].metadata("segment", sync)
        assert meta["rows_rejected"] == 1, sync
        assert meta["rejected_sample"][0]["key"] == "9"
        assert "no user id" in meta["rejected_sample"][0]["reason"]
        assert 0 < meta["state_seconds"] < meta["duration_seconds"]  # the journal and the fold, timed
        assert 0 <= meta["journal_write_seconds"] < meta["duration_seconds"]  # the journal's thread, alongside
    assert runs["quiet"].metadata("segment", "quiet")["rows_skipped"] == 4

    warehouse.execute(*CHANGE)
    sent, runs = _run_all(definitions, instance, emulator)
    diff_counts = runs["lifecycle"].metadata("diff", "lifecycle")
    assert [diff_counts[k] for k in ("added", "changed", "removed")] == [2, 1, 1]  # row 9 is still "added"
    assert _names(sent["lifecycle"]) == [
        ("User Changed Plan", "u1"),
        ("User Deleted Account", "u3"),
        ("User Signed Up", "u4"),
    ]
    removed = next(e for e in sent["lifecycle"] if e["event"] == "User Deleted Account")
    assert removed["properties"] == {"plan": "team", "email": "drei@example.com"}  # the last delivered values
    changed = next(e for e in sent["lifecycle"] if e["event"] == "User Changed Plan")
    assert (changed["properties"]["plan"], changed["timestamp"]) == ("team", "2026-02-01T12:30:00.000Z")
    assert _names(sent["audience"]) == [("Segment Entered", "u4"), ("Segment Exited", "u3")]
    assert _names(sent["traits"]) == [("identify", "u1"), ("identify", "u4")]
    assert _names(sent["accounts"]) == [("group", "u4")]  # plan and last_seen are not sent by this sync
    assert _names(sent["quiet"]) == [("Added", "u4")]

    sent, runs = _run_all(definitions, instance, emulator)
    assert all(events == [] for events in sent.values())
    assert runs["lifecycle"].metadata("segment", "lifecycle")["rows_rejected"] == 1  # row 9 is retried every run

    assert emulator.duplicates == 0
    assert emulator.discarded == []
    assert len(emulator.unique_events()) == len(emulator.accepted) == 21
    assert all(r.headers.get("Authorization") for r in emulator.requests)
    assert WRITE_KEY not in str(runs["lifecycle"].metadata("segment", "lifecycle"))


def test_hashes_from_another_version_send_only_real_changes(
    duckdb_warehouse, state_dir, emulator, instance, monkeypatch
):
    """A new Polars or hashing scheme changes every stored row hash: contents decide once, then hashes again."""
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    duckdb_warehouse.execute(*SEED)
    definitions = make_definitions(PROJECT)
    assert run_sync(definitions, "lifecycle", instance).success
    folder = state_dir / "syncs" / "lifecycle"
    stored = pl.read_parquet(folder / "delivered.parquet")
    stale = stored.with_columns(pl.col("_hash") ^ pl.lit(0xDEAD, pl.UInt64))  # as another version made them
    stale.write_parquet(folder / "delivered.parquet")
    meta = orjson.loads((folder / "meta.json").read_bytes())
    (folder / "meta.json").write_bytes(orjson.dumps({**meta, "hash_basis": "made-by-an-older-version"}))
    killed = folder / "segment-sync-diff-left-by-a-killed-run"  # a sliced diff's files, left behind
    killed.mkdir()
    (killed / "0.parquet").write_bytes(b"partial")

    duckdb_warehouse.execute("update users set plan = 'team' where id = 1")
    before = len(emulator.accepted)
    run = run_sync(definitions, "lifecycle", instance)
    assert run.success, run.failure_messages()
    assert _names(_sent(emulator, before)) == [("User Changed Plan", "u1")]
    assert list(folder.glob("segment-sync-diff-*")) == []
    refreshed = pl.read_parquet(folder / "delivered.parquet").sort("_key")
    assert refreshed["_hash"].to_list() != stale.sort("_key")["_hash"].to_list()
    assert orjson.loads((folder / "meta.json").read_bytes())["hash_basis"] != "made-by-an-older-version"

    before = len(emulator.accepted)
    assert run_sync(definitions, "lifecycle", instance).success
    assert _sent(emulator, before) == []
    assert pl.read_parquet(folder / "delivered.parquet").sort("_key")["_hash"].equals(refreshed["_hash"])
