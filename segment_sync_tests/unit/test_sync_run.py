"""Chunked delivery of a diff: state advances only for acknowledged or skipped rows, every row is logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from segment_sync.delivery.diff_delivery import NOT_ATTEMPTED, _recorder, deliver_diff, diff_chunks
from segment_sync.diff.keyed_diff import compute_diff
from segment_sync.events.row_builder import DiffRow, build_outcomes
from segment_sync.segment_api.batching import Joined
from segment_sync.segment_api.client import RetryPolicy
from segment_sync.segment_api.transport import Response
from segment_sync.spec import SyncSpec
from segment_sync.storage.run_log import ROW_LOG_SCHEMA, RunLog, read_row_log
from segment_sync.storage.state import SyncState
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, CONTENT, HASH, KEY, KIND

SYNC = SyncSpec(
    name="t", model="m", type="track", user_id="uid", fields=["v"], events={"added": "A"}, send_initial=True
)
LOGGED = ["key", "kind", "event", "message_id", "status", "reason"]


class ScriptedTransport:
    """Answers POSTs from a script of statuses (200 once the script runs out) and keeps every body."""

    write_key = "wk"

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []

    def post(self, body: bytes, attempt: int) -> Response:
        self.bodies.append(orjson.loads(body))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status, "bad event" if status == 400 else "")

    def user_ids(self) -> list[str]:
        return [e["userId"] for b in self.bodies for e in b["batch"]]


def snapshot(n: int, nulls: tuple[int, ...] = (), value: str = "x") -> pl.DataFrame:
    return pl.DataFrame(
        {"id": list(range(n)), "uid": [None if i in nulls else f"u{i}" for i in range(n)], "v": [value] * n}
    )


def _diff(n: int, store: SyncState, nulls: tuple[int, ...] = (), value: str = "x", sync: SyncSpec = SYNC):
    return compute_diff(snapshot(n, nulls, value), ["id"], sync.sent_columns, store.delivered()).collect().sort(KEY)


def _run(store, diff, transport, tmp_path, *, sync: SyncSpec = SYNC, initial: bool = True, **kw):
    store.begin_run()
    log = RunLog(tmp_path / "s", "t", "run-1")
    kw = {"chunk_rows": 4, "policy": RetryPolicy(max_attempts=1), **kw}
    result = deliver_diff(sync, diff, store, transport, log, initial=initial, **kw)
    log.close()
    store.commit()
    return result, log


def logged(tmp_path: Path) -> list[dict[str, Any]]:
    return read_row_log(tmp_path / "s", "run-1").select(LOGGED).collect().to_dicts()


def test_every_chunk_is_sent_and_recorded(tmp_path):
    store = SyncState(tmp_path / "s", "t")
    transport = ScriptedTransport()
    result, log = _run(store, _diff(10, store, nulls=(3,)), transport, tmp_path)
    assert len(transport.bodies) == 3  # chunks of 4, 4 and 2 rows
    assert result.sent == {"A": 9} and log.rejected == 1 and log.rejected_sample[0]["key"] == "3"
    assert store.delivered_row_count() == 9
    assert _diff(10, store, nulls=(3,)).height == 1  # only the rejected row is left to send


def test_a_failed_chunk_stops_delivery_and_leaves_later_rows_for_the_next_run(tmp_path):
    store = SyncState(tmp_path / "s", "t")
    result, log = _run(store, _diff(10, store), ScriptedTransport(200, 503), tmp_path)
    assert result.sent == {"A": 4} and result.undelivered == 6 and "503" in result.undelivered_reason
    assert result.undelivered_by_kind == {"added": 6}
    assert store.delivered_row_count() == 4
    statuses = [(r["key"], r["status"], r["reason"]) for r in logged(tmp_path)]
    assert statuses[:4] == [(str(i), "delivered", None) for i in range(4)]
    assert statuses[4:8] == [(str(i), "undelivered", result.undelivered_reason) for i in range(4, 8)]
    assert statuses[8:] == [(str(i), "undelivered", NOT_ATTEMPTED) for i in range(8, 10)]
    assert log.statuses == {"delivered": 4, "undelivered": 6}
    retry = ScriptedTransport()
    result, _ = _run(store, _diff(10, store), retry, tmp_path)
    assert result.sent == {"A": 6} and sorted(retry.user_ids()) == [f"u{i}" for i in range(4, 10)]


def test_a_lazy_diff_is_streamed_from_its_file_in_chunks(tmp_path):
    store = SyncState(tmp_path / "s", "t")
    path = tmp_path / "diff.parquet"
    _diff(23, store).write_parquet(path, row_group_size=5)
    transport = ScriptedTransport()
    result, log = _run(store, pl.scan_parquet(path), transport, tmp_path, chunk_rows=7)
    assert [len(b["batch"]) for b in transport.bodies] == [7, 7, 7, 2]
    assert transport.user_ids() == [f"u{i}" for i in sorted(range(23), key=str)]
    assert result.sent == {"A": 23} and store.delivered_row_count() == 23
    assert [r["status"] for r in logged(tmp_path)] == ["delivered"] * 23


def test_diff_chunks_reads_every_row_once_in_order(tmp_path):
    frame = pl.DataFrame({"i": range(10)})
    frame.write_parquet(tmp_path / "f.parquet", row_group_size=3)
    for diff in (frame, pl.scan_parquet(tmp_path / "f.parquet")):
        chunks = list(diff_chunks(diff, 4))
        assert [c.height for c in chunks] == [4, 4, 2]
        assert pl.concat(chunks)["i"].to_list() == list(range(10))
    assert list(diff_chunks(frame.clear(), 4)) == []


def test_the_row_log_holds_what_the_row_wise_builder_gives(tmp_path):
    """Mixed outcomes: delivered, rejected before sending, rejected by Segment, skipped; with names and ids."""
    sync = SyncSpec(
        name="t", model="m", type="track", user_id="uid", fields=["v"], events={"added": "A", "removed": "R"}
    )
    store = SyncState(tmp_path / "s", "t")
    _run(store, _diff(6, store, value="old", sync=sync), ScriptedTransport(), tmp_path, sync=sync, initial=False)
    diff = compute_diff(snapshot(8, nulls=(6,), value="new").slice(2), ["id"], sync.sent_columns, store.delivered())
    diff = diff.collect().sort(KEY)  # 0, 1 removed; 2..5 changed (skipped); 6 (no uid) and 7 added
    transport = ScriptedTransport(200, 400)  # the second chunk's batch is refused
    result, log = _run(store, diff, transport, tmp_path, sync=sync, initial=False, chunk_rows=5)
    rows = [DiffRow(*r) for r in diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]
    outcomes = {o.row.key: o for o in build_outcomes(sync, rows, store.meta.sync_uuid, initial=False)}
    entries = {r["key"]: r for r in logged(tmp_path)}
    assert set(entries) == set(outcomes)
    for key, o in outcomes.items():
        entry = entries[key]
        if o.skipped:
            assert entry["status"] == "skipped" and entry["reason"] == "sync 't' sends nothing for a changed row"
        elif o.rejected is not None:
            assert (entry["status"], entry["reason"], entry["message_id"]) == ("rejected", o.rejected, None)
        else:
            assert (entry["event"], entry["message_id"]) == (o.event.name, o.event.message_id)
    assert {k: entries[k]["status"] for k in ("0", "1", "7")} == {"0": "delivered", "1": "delivered", "7": "rejected"}
    assert entries["7"]["reason"] == "Segment answered 400: bad event"
    assert result.sent == {"R": 2} and result.skipped == 4 and log.rejected == 2
    rejected = [orjson.loads(line) for line in log.rejected_path.read_bytes().splitlines()]
    assert [(r["key"], r["kind"]) for r in rejected] == [("6", "added"), ("7", "added")]
    assert log.rejected_by_kind == {"added": 2}
    state = store.delivered().collect()
    assert state.filter(pl.col(KEY).is_in(["0", "1"]))[CONTENT].to_list() == [None, None]  # removed: tombstones
    changed = state.filter(pl.col(KEY) == "2").row(0, named=True)
    # a change that sent nothing keeps the content last sent, under the new hash (not diffed again until it changes)
    assert changed[CONTENT] == '{"uid":"u2","v":"old"}' and changed[HASH] == diff.filter(pl.col(KEY) == "2")[HASH][0]
    assert state.filter(pl.col(KEY).is_in(["6", "7"])).is_empty()  # rejected rows wait for the next run


def test_the_first_run_skips_everything_without_send_initial(tmp_path):
    sync = SyncSpec(name="t", model="m", type="track", user_id="uid", fields=["v"], events={"added": "A"})
    store = SyncState(tmp_path / "s", "t")
    transport = ScriptedTransport()
    result, log = _run(store, _diff(5, store, sync=sync), transport, tmp_path, sync=sync)
    assert transport.bodies == [] and result.skipped == 5 and store.delivered_row_count() == 5
    assert {r["reason"] for r in logged(tmp_path)} == {"initial run, and send_initial is off"}
    assert log.statuses == {"skipped": 5}


def test_a_baseline_that_dies_midway_keeps_what_it_noted_and_the_next_run_notes_the_rest(tmp_path, monkeypatch):
    sync = SyncSpec(name="t", model="m", type="track", user_id="uid", fields=["v"], events={"added": "A"})
    store = SyncState(tmp_path / "s", "t")
    noted, record_file = [], SyncState.record_file

    def dies_on_the_third_chunk(self, rows):
        if len(noted) == 2:
            raise KeyboardInterrupt("the process dies")
        noted.append(rows.height)
        record_file(self, rows)

    monkeypatch.setattr(SyncState, "record_file", dies_on_the_third_chunk)
    store.begin_run()
    log = RunLog(tmp_path / "s", "t", "run-0")
    with pytest.raises(KeyboardInterrupt):
        deliver_diff(sync, _diff(10, store, sync=sync), store, ScriptedTransport(), log, initial=True, chunk_rows=4)
    monkeypatch.setattr(SyncState, "record_file", record_file)

    store = SyncState(tmp_path / "s", "t")  # the next run: the dead run's chunks are folded first
    assert not store.meta.baseline_done
    transport = ScriptedTransport()
    store.recover()
    assert store.delivered_row_count() == 8
    result, _ = _run(store, _diff(10, store, sync=sync), transport, tmp_path, sync=sync)
    assert transport.bodies == [] and result.skipped == 2 and store.delivered_row_count() == 10
    assert store.meta.baseline_done and sorted(p.name for p in store.root.glob("noted-*")) == []


def test_delivery_options_reach_deliver(tmp_path):
    store = SyncState(tmp_path / "s", "t")
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_seconds=0.25)
    result, _ = _run(store, _diff(3, store), ScriptedTransport(503), tmp_path, policy=policy, sleep=waits.append)
    assert result.sent == {"A": 3} and result.retries == 1 and len(waits) == 1
    with pytest.raises(TypeError, match="no_such_option"):
        _run(store, _diff(5, store), ScriptedTransport(), tmp_path, no_such_option=1)


def test_add_frame_logs_like_add_in_order(tmp_path):
    log = RunLog(tmp_path, "s", "r")
    log.add("a", "added", "delivered", event="E", message_id="m1")
    log.add_frame(
        pl.DataFrame(
            {
                "key": ["b", "c", None],
                "kind": ["changed", "added", "added"],
                "status": ["rejected", "skipped", "rejected"],
            }
        ).with_columns(pl.Series("reason", ["too big", "no event", None]))
    )
    log.add("d", "removed", "undelivered", reason="later")
    log.close()
    rows = read_row_log(tmp_path, "r").collect()
    assert rows.schema == pl.Schema(ROW_LOG_SCHEMA)
    assert rows.select(LOGGED).rows() == [
        ("a", "added", "E", "m1", "delivered", None),
        ("b", "changed", None, None, "rejected", "too big"),
        ("c", "added", None, None, "skipped", "no event"),
        (None, "added", None, None, "rejected", None),
        ("d", "removed", None, None, "undelivered", "later"),
    ]
    assert set(rows["run_id"]) == {"r"} and set(rows["sync"]) == {"s"} and rows["logged_at"].null_count() == 0
    assert log.statuses == {"delivered": 1, "rejected": 2, "skipped": 1, "undelivered": 1}
    assert log.rejected_by_kind == {"changed": 1}  # the row without a key is not a diff row
    assert log.rejected_path.read_bytes().splitlines() == [
        b'{"key":"b","kind":"changed","reason":"too big"}',
        b'{"key":null,"kind":"added","reason":""}',
    ]


def test_add_frame_flushes_in_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr("segment_sync.storage.run_log._FLUSH_ROWS", 3)
    log = RunLog(tmp_path, "s", "r")
    for start in range(0, 8, 2):
        log.add_frame(pl.DataFrame({"key": [str(start), str(start + 1)], "kind": "added", "status": "delivered"}))
    log.close()
    assert read_row_log(tmp_path, "r").collect()["key"].to_list() == [str(i) for i in range(8)]


def test_acknowledged_events_are_recorded_whether_or_not_they_are_a_run(tmp_path):
    store = SyncState(tmp_path / "state", "s")
    store.begin_run()
    delivered = pl.DataFrame({KEY: list("abcdef"), CONTENT: list("ABCDEF"), HASH: list(range(6))})
    record = _recorder(store, Joined.from_series(store.journal_lines(delivered)), {})
    with store.lock():  # the journal is written by the time the lock is released
        for acknowledged in ([1, 2, 3], range(4, 6), [0, 2], [5, 4]):
            record(acknowledged)
    lines = [orjson.loads(line) for line in store.journal_path.read_bytes().splitlines()]
    assert [e["k"] for e in lines] == list("bcdefacfe")
    assert [(e["c"], e["h"], e["g"]) for e in lines[:2]] == [("B", 1, 1), ("C", 2, 1)]
