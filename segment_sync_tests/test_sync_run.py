"""Chunked delivery of a diff: state advances only for acknowledged or skipped rows."""

from __future__ import annotations

import orjson
import polars as pl

from segment_sync.delivery import Response, RetryPolicy
from segment_sync.diff import compute_diff, current_contents
from segment_sync.spec import SyncSpec
from segment_sync.state import SyncState
from segment_sync.sync_log import RunLog
from segment_sync.sync_run import deliver_diff

SYNC = SyncSpec(
    name="t", model="m", type="track", user_id="uid", fields=["v"], events={"added": "A"}, send_initial=True
)


class ScriptedTransport:
    """Answers POSTs from a script of statuses (200 once the script runs out) and keeps every body."""

    write_key = "wk"

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []

    def post(self, body: bytes, attempt: int) -> Response:
        self.bodies.append(orjson.loads(body))
        return Response(self.statuses.pop(0) if self.statuses else 200)


def _diff(n: int, store: SyncState, nulls: tuple[int, ...] = ()) -> pl.DataFrame:
    snapshot = pl.DataFrame(
        {"id": list(range(n)), "uid": [None if i in nulls else f"u{i}" for i in range(n)], "v": ["x"] * n}
    )
    return compute_diff(current_contents(snapshot, ["id"], SYNC.sent_columns), store.delivered())


def _run(store, diff, transport, tmp_path, **kw):
    store.begin_run()
    log = RunLog(tmp_path / "s", "t", "run-1")
    result = deliver_diff(
        SYNC, diff, store, transport, log, initial=True, chunk_rows=4, policy=RetryPolicy(max_attempts=1), **kw
    )
    log.close()
    store.commit()
    return result, log


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
    result, _ = _run(store, _diff(10, store), ScriptedTransport(200, 503), tmp_path)
    assert result.sent == {"A": 4} and result.undelivered == 6 and "503" in result.undelivered_reason
    assert store.delivered_row_count() == 4
    retry = ScriptedTransport()
    result, _ = _run(store, _diff(10, store), retry, tmp_path)
    assert result.sent == {"A": 6} and sorted(e["userId"] for b in retry.bodies for e in b["batch"]) == [
        f"u{i}" for i in range(4, 10)
    ]
