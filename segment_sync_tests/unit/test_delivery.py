"""Delivery with retries, bisection on 400 and giving up, against a scripted in-process transport.

The real HTTP path is tested against the emulator elsewhere; here the Transport protocol is faked so
every status, exception and wait can be scripted exactly and nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import types
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_sync.segment_api import batching
from segment_sync.segment_api.client import RETRYABLE_STATUSES, RetryPolicy, _indices, deliver
from segment_sync.segment_api.pacing import Pacer
from segment_sync.segment_api.transport import Outbox, Response

OK = Response(200, '{"success":true}')
Script = Response | BaseException | Callable[[bytes], Response]


class FakeTransport:
    """Answers each POST from a script (default 200) and records what was sent."""

    def __init__(self, script: Sequence[Script] = (), write_key: str | None = "wk", default: Script = OK):
        self.script = list(script)
        self.default = default
        self.write_key = write_key
        self.bodies: list[bytes] = []
        self.attempts: list[int] = []

    def post(self, body: bytes, attempt: int) -> Response:
        self.bodies.append(body)
        self.attempts.append(attempt)
        item = self.script.pop(0) if self.script else self.default
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, Response):
            item = item(body)
        return item

    def sent_ids(self, n: int) -> list[str]:
        """The userIds of the n-th request's events."""
        return [e["userId"] for e in json.loads(self.bodies[n])["batch"]]


class Acks:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.raw: list[Sequence[int]] = []  # as given

    def __call__(self, indices: Sequence[int]) -> None:
        self.calls.append(list(indices))
        self.raw.append(indices)

    @property
    def all(self) -> list[int]:
        return [i for call in self.calls for i in call]


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def payloads(n: int, *, bad: Sequence[int] = (), size: int = 0) -> list[bytes]:
    return [
        orjson.dumps({"type": "track", "event": "E", "userId": str(i), "bad": i in bad, "pad": "x" * size})
        for i in range(n)
    ]


def rejects_bad(body: bytes) -> Response:
    events = json.loads(body)["batch"]
    return Response(400, "Bad Request\n") if any(e["bad"] for e in events) else OK


def run(
    events: list[bytes],
    transport: FakeTransport,
    *,
    policy: RetryPolicy | None = None,
    max_batch_bytes: int | None = None,
) -> tuple[Any, Acks, Sleeps]:
    acks, sleeps = Acks(), Sleeps()
    pacer = Pacer(sleep=Sleeps())  # pacing waits are recorded apart from retry waits
    report = deliver(events, transport, acks, policy=policy, max_batch_bytes=max_batch_bytes, pacer=pacer, sleep=sleeps)
    return report, acks, sleeps


# --- success ---------------------------------------------------------------------------------------


def test_all_acknowledged_in_one_batch() -> None:
    transport = FakeTransport()
    report, acks, sleeps = run(payloads(5), transport)
    assert acks.calls == [[0, 1, 2, 3, 4]]
    assert (report.acknowledged, report.rejected, report.undelivered) == (5, [], [])
    assert (report.requests, report.batches, report.retries) == (1, 1, 0)
    assert report.bytes_sent == len(transport.bodies[0])
    assert report.undelivered_reason is None
    assert sleeps == []
    body = json.loads(transport.bodies[0])
    assert body["writeKey"] == "wk"
    assert [e["userId"] for e in body["batch"]] == ["0", "1", "2", "3", "4"]


def test_many_batches_in_order() -> None:
    events = payloads(30, size=200)
    transport = FakeTransport()
    report, acks, _ = run(events, transport, max_batch_bytes=2_000)
    assert acks.all == list(range(30))
    assert report.batches == len(acks.calls) == len(transport.bodies) > 3
    assert all(len(b) <= 2_000 for b in transport.bodies)
    assert report.acknowledged == 30


def test_nothing_to_send() -> None:
    transport = FakeTransport()
    report, acks, _ = run([], transport)
    assert transport.bodies == [] and acks.calls == []
    assert (report.acknowledged, report.requests, report.batches) == (0, 0, 0)


def test_any_2xx_acknowledges() -> None:
    report, acks, _ = run(payloads(2), FakeTransport([Response(202)]))
    assert acks.calls == [[0, 1]]
    assert report.acknowledged == 2


# --- retries ---------------------------------------------------------------------------------------


def test_500_then_200_retried_with_the_same_events() -> None:
    transport = FakeTransport([Response(500, "Something went wrong")])
    report, acks, sleeps = run(payloads(3), transport)
    assert len(transport.bodies) == 2
    assert transport.attempts == [1, 2]
    first, second = (json.loads(b) for b in transport.bodies)
    assert first["batch"] == second["batch"]
    assert acks.calls == [[0, 1, 2]]
    assert (report.requests, report.retries, report.acknowledged) == (2, 1, 3)
    assert report.bytes_sent == sum(len(b) for b in transport.bodies)
    assert len(sleeps) == 1


def test_retry_count_and_attempt_numbers() -> None:
    transport = FakeTransport([Response(503)] * 4)
    report, acks, sleeps = run(payloads(1), transport)
    assert transport.attempts == [1, 2, 3, 4, 5]
    assert report.retries == 4
    assert report.requests == 5
    assert len(sleeps) == 4
    assert acks.calls == [[0]]


@pytest.mark.parametrize("status", [408, 410, 429, 460, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    transport = FakeTransport([Response(status)])
    report, acks, _ = run(payloads(2), transport)
    assert len(transport.bodies) == 2
    assert report.retries == 1
    assert acks.calls == [[0, 1]]
    assert status in RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [501, 505])
def test_501_and_505_not_retried(status: int) -> None:
    transport = FakeTransport([Response(status, "nope")])
    report, acks, sleeps = run(payloads(3), transport)
    assert len(transport.bodies) == 1
    assert acks.calls == []
    assert [i for i, _ in report.rejected] == [0, 1, 2]
    assert all(str(status) in reason for _, reason in report.rejected)
    assert report.retries == 0 and sleeps == []
    assert status not in RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [401, 403, 404, 413, 422])
def test_other_4xx_reject_the_whole_batch(status: int) -> None:
    transport = FakeTransport([Response(status, '{"code":"x","message":"denied"}')])
    report, acks, sleeps = run(payloads(4), transport)
    assert len(transport.bodies) == 1
    assert acks.calls == []
    assert [i for i, _ in report.rejected] == [0, 1, 2, 3]
    reason = report.rejected[0][1]
    assert f"Segment answered {status}" in reason
    assert "denied" in reason
    assert report.acknowledged == 0 and report.undelivered == []
    assert sleeps == [] and report.retries == 0


def test_rejected_batch_does_not_stop_later_batches() -> None:
    events = payloads(20, size=200)
    transport = FakeTransport([Response(403, "Forbidden")])
    report, acks, _ = run(events, transport, max_batch_bytes=2_000)
    first = [i for i, _ in report.rejected]
    assert first == list(range(len(first))) and first
    assert acks.all == list(range(len(first), 20))
    assert report.undelivered == []


def test_reason_without_body() -> None:
    report, _, _ = run(payloads(1), FakeTransport([Response(401, "  ")]))
    assert report.rejected == [(0, "Segment answered 401: no body")]


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("connection refused"),
        requests.Timeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("broken"),
        ConnectionResetError("reset by peer"),
        TimeoutError("timed out"),
        OSError("network is unreachable"),
    ],
)
def test_network_errors_retried(exc: BaseException) -> None:
    transport = FakeTransport([exc])
    report, acks, sleeps = run(payloads(2), transport)
    assert len(transport.bodies) == 2
    assert acks.calls == [[0, 1]]
    assert report.retries == 1 and len(sleeps) == 1


def test_retry_after_honoured() -> None:
    transport = FakeTransport([Response(429, "slow down", retry_after=7.0), Response(503, retry_after=2.5)])
    report, acks, sleeps = run(payloads(1), transport)
    assert sleeps == [7.0, 2.5]
    assert acks.calls == [[0]]


def test_retry_after_capped_at_300_and_floored_at_0() -> None:
    transport = FakeTransport([Response(429, retry_after=10_000.0), Response(429, retry_after=-5.0)])
    _, acks, sleeps = run(payloads(1), transport)
    assert sleeps == [300.0, 0.0]
    assert acks.calls == [[0]]


def test_backoff_without_retry_after_grows_with_jitter() -> None:
    transport = FakeTransport([Response(500)] * 5)
    _, _, sleeps = run(payloads(1), transport)
    assert len(sleeps) == 5
    for attempt, wait in enumerate(sleeps, start=1):
        full = min(0.5 * 2 ** (attempt - 1), 60.0)
        assert full / 2 <= wait <= full, (attempt, wait)


def test_fresh_sent_at_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = iter(dt.datetime(2026, 1, 1, 0, 0, s, tzinfo=dt.UTC) for s in range(10))

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return next(moments)

    monkeypatch.setattr(batching, "dt", types.SimpleNamespace(datetime=Clock, UTC=dt.UTC))
    transport = FakeTransport([Response(500), requests.Timeout("t")])
    run(payloads(2), transport)
    stamps = [json.loads(b)["sentAt"] for b in transport.bodies]
    assert stamps == ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z"]


# --- giving up -------------------------------------------------------------------------------------


def test_give_up_after_max_attempts_marks_the_rest_undelivered() -> None:
    events = payloads(20, size=200)
    policy = RetryPolicy(max_attempts=3)
    # First batch accepted, then the service stays down.
    transport = FakeTransport([OK], default=Response(503, "Service Unavailable"))
    report, acks, sleeps = run(events, transport, policy=policy, max_batch_bytes=2_000)
    (first,) = acks.calls
    assert first == list(range(len(first))) and 0 < len(first) < 20
    assert report.undelivered == list(range(len(first), 20))
    assert report.acknowledged == len(first)
    assert report.rejected == []
    assert report.undelivered_reason is not None
    assert "gave up after 3 attempts" in report.undelivered_reason
    assert "HTTP 503" in report.undelivered_reason
    assert len(transport.bodies) == 1 + 3  # no batch after the failing one was tried
    assert transport.attempts == [1, 1, 2, 3]
    assert report.retries == 2 and len(sleeps) == 2
    assert report.batches == 2


def test_give_up_on_the_first_batch_never_acknowledges() -> None:
    transport = FakeTransport(default=requests.ConnectionError("Connection refused\nmore details"))
    report, acks, _ = run(payloads(25, size=200), transport, policy=RetryPolicy(max_attempts=2), max_batch_bytes=2_000)
    assert acks.calls == []
    assert report.undelivered == list(range(25))
    assert report.undelivered_reason is not None
    assert "2 attempts" in report.undelivered_reason
    assert "ConnectionError: Connection refused" in report.undelivered_reason
    assert "more details" not in report.undelivered_reason


def test_give_up_when_the_wait_would_pass_the_time_budget() -> None:
    transport = FakeTransport([Response(503, retry_after=120.0)])
    report, acks, sleeps = run(payloads(3), transport, policy=RetryPolicy(max_total_seconds=60.0))
    assert len(transport.bodies) == 1
    assert sleeps == []
    assert acks.calls == []
    assert report.undelivered == [0, 1, 2]
    assert report.undelivered_reason is not None
    assert "gave up" in report.undelivered_reason
    assert "HTTP 503" in report.undelivered_reason


def test_rate_limiting_does_not_use_up_attempts() -> None:
    transport = FakeTransport([Response(429, retry_after=1.0)] * 5)
    report, acks, sleeps = run(payloads(2), transport, policy=RetryPolicy(max_attempts=2))
    assert acks.calls == [[0, 1]] and sleeps == [1.0] * 5 and report.retries == 5


def test_rate_limiting_is_bounded_in_time() -> None:
    transport = FakeTransport([Response(429, retry_after=100.0)] * 5)
    report, acks, sleeps = run(payloads(1), transport, policy=RetryPolicy(max_throttled_seconds=250.0))
    assert acks.calls == [] and sleeps == [100.0, 100.0] and report.undelivered == [0]
    assert "rate limiting (HTTP 429)" in report.undelivered_reason


def test_give_up_during_bisection_includes_pending_halves() -> None:
    events = payloads(8, bad=[1])
    # 400 on the whole batch, then the first half also 400, then the service goes away.
    transport = FakeTransport([Response(400), Response(400)], default=Response(503))
    report, acks, _ = run(events, transport, policy=RetryPolicy(max_attempts=1))
    assert acks.calls == []
    assert report.undelivered == [0, 1, 2, 3, 4, 5, 6, 7]


# --- 400 bisection ---------------------------------------------------------------------------------


def test_400_bisects_to_the_bad_event() -> None:
    transport = FakeTransport(default=rejects_bad)
    report, acks, sleeps = run(payloads(8, bad=[5]), transport)
    assert acks.calls == [[0, 1, 2, 3], [4], [6, 7]]
    assert report.acknowledged == 7
    assert [i for i, _ in report.rejected] == [5]
    assert "400" in report.rejected[0][1]
    assert "Bad Request" in report.rejected[0][1]
    # [0..8) 400, [0..4) ok, [4..8) 400, [4..6) 400, [4] ok, [5] 400, [6..8) ok
    assert [len(json.loads(b)["batch"]) for b in transport.bodies] == [8, 4, 4, 2, 1, 1, 2]
    assert report.requests == 7 and report.retries == 0 and sleeps == []


def test_400_bisects_two_bad_events() -> None:
    transport = FakeTransport(default=rejects_bad)
    report, acks, _ = run(payloads(10, bad=[0, 9]), transport)
    assert sorted(acks.all) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sorted(i for i, _ in report.rejected) == [0, 9]
    assert report.acknowledged == 8


def test_400_on_a_single_event_rejects_it() -> None:
    report, acks, _ = run(payloads(1), FakeTransport([Response(400, "Bad Request")]))
    assert acks.calls == []
    assert report.rejected == [(0, "Segment answered 400: Bad Request")]


def test_400_bisection_with_retry_in_between() -> None:
    script: list[Script] = [Response(400), Response(500)]
    transport = FakeTransport(script, default=rejects_bad)
    report, acks, _ = run(payloads(4, bad=[3]), transport)
    assert sorted(acks.all) == [0, 1, 2]
    assert [i for i, _ in report.rejected] == [3]
    assert report.retries == 1


def test_400_finds_bad_events_in_three_quarters_of_a_batch() -> None:
    transport = FakeTransport(default=rejects_bad)
    report, acks, _ = run(payloads(16, bad=[1, 5, 13]), transport)
    assert sorted(i for i, _ in report.rejected) == [1, 5, 13]
    assert sorted(acks.all) == sorted(set(range(16)) - {1, 5, 13}) and report.undelivered == []


REFUSED = "Segment refused the request itself, not an event in it: it answered 400: Bad Request"


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(50, [50, 25, 12, 13, 25, 12, 13]), (3, [3, 1, 2, 1, 1]), (2, [2, 1, 1])],
)
def test_a_400_to_every_half_and_quarter_refuses_the_request_without_splitting_further(
    n: int, sizes: list[int]
) -> None:
    transport = FakeTransport(default=Response(400, "Bad Request\n"))
    report, acks, _ = run(payloads(n), transport)
    assert [len(json.loads(b)["batch"]) for b in transport.bodies] == sizes  # the batch, its halves, their halves
    assert acks.calls == [] and report.rejected == [] and report.undelivered == list(range(n))
    assert report.undelivered_reason is not None and report.undelivered_reason.startswith(REFUSED)


def test_a_refused_request_stops_the_delivery() -> None:
    transport = FakeTransport(default=Response(400, "Bad Request\n"))
    report, acks, _ = run(payloads(30, size=200), transport, max_batch_bytes=2_000)
    assert len(transport.bodies) == 7 and len(transport.sent_ids(0)) < 30
    assert all(set(transport.sent_ids(n)) <= set(transport.sent_ids(0)) for n in range(7))  # no other batch started
    assert acks.calls == [] and report.undelivered == list(range(30))


def test_a_400_on_a_single_event_batch_rejects_it_and_the_delivery_goes_on() -> None:
    transport = FakeTransport([OK, Response(400, "Bad Request")])
    big = payloads(3, size=1_000)
    report, acks, _ = run(big, transport, max_batch_bytes=1_200)
    assert acks.all == [0, 2] and report.rejected == [(1, "Segment answered 400: Bad Request")]


def test_parts_held_when_another_part_gives_up_are_undelivered() -> None:
    # The batch, its first half and that half's first half are refused; the second quarter's service goes away.
    transport = FakeTransport([Response(400), Response(400), Response(400)], default=Response(503))
    report, acks, _ = run(payloads(10), transport, policy=RetryPolicy(max_attempts=1))
    assert [len(json.loads(b)["batch"]) for b in transport.bodies] == [10, 5, 2, 3]
    assert acks.calls == [] and report.rejected == [] and report.undelivered == list(range(10))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([200, 200, 400, 400, 413, 503]), min_size=1, max_size=40),
    st.integers(1, 40),
    st.sampled_from([1, 3]),
)
def test_every_event_ends_acknowledged_rejected_or_undelivered_once(answers: list[int], n: int, in_flight: int) -> None:
    def answer(body: bytes) -> Response:  # the same answer for the same events, whatever the order of requests
        ids = ",".join(e["userId"] for e in json.loads(body)["batch"])
        return Response(answers[zlib.crc32(ids.encode()) % len(answers)], "Bad Request")

    transport = ConcurrentTransport(in_flight, hold=0, default=answer)
    acks = Acks()
    report = deliver(payloads(n, size=200), transport, acks, max_batch_bytes=1_000, policy=RetryPolicy(max_attempts=1))
    outcomes = acks.all + [i for i, _ in report.rejected] + report.undelivered
    assert sorted(outcomes) == list(range(n))
    assert report.acknowledged == len(acks.all)


def test_batches_acknowledged_back_to_back_come_as_one_range() -> None:
    acks = Acks()
    deliver(payloads(30, size=200), FakeTransport(), acks, max_batch_bytes=2_000, pacer=Pacer(sleep=Sleeps()))
    assert all(isinstance(call, range) for call in acks.raw) and acks.all == list(range(30))


def test_batches_acknowledged_together_out_of_order_come_as_a_list() -> None:
    assert _indices([range(0, 2), range(2, 5)]) == range(5)
    assert _indices([range(4, 6), range(0, 2)]) == [4, 5, 0, 1]
    assert _indices([range(0, 2), range(3, 4)]) == [0, 1, 3]


# --- RetryPolicy -----------------------------------------------------------------------------------


def test_retry_policy_wait_bounds() -> None:
    policy = RetryPolicy()
    for attempt in range(1, 15):
        full = min(0.5 * 2 ** (attempt - 1), 60.0)
        waits = [policy.wait(attempt, None) for _ in range(50)]
        assert all(full / 2 <= w <= full for w in waits), attempt
    assert max(policy.wait(30, None) for _ in range(50)) <= 60.0
    assert policy.wait(1, 42.0) == 42.0
    assert policy.wait(1, 301.0) == 300.0
    assert policy.wait(1, -3.0) == 0.0
    assert RetryPolicy(max_retry_after_seconds=10).wait(1, 50.0) == 10.0


def test_retry_policy_jitter_varies() -> None:
    policy = RetryPolicy()
    assert len({policy.wait(3, None) for _ in range(20)}) > 1


def test_retry_policy_wait_nan_retry_after_is_finite() -> None:
    wait = RetryPolicy().wait(1, float("nan"))
    assert 0.0 <= wait <= 300.0


# --- Outbox ----------------------------------------------------------------------------------------


def test_deliver_to_outbox(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    events = payloads(30, size=200)
    acks = Acks()
    report = deliver(events, Outbox(path), acks, max_batch_bytes=2_000, sleep=Sleeps())
    lines = path.read_bytes().splitlines()
    assert len(lines) == report.batches == len(acks.calls) > 1
    sent = [e for line in lines for e in json.loads(line)["batch"]]
    assert [e["userId"] for e in sent] == [str(i) for i in range(30)]
    assert all("writeKey" not in json.loads(line) for line in lines)
    assert all(len(line) <= 2_000 for line in lines)
    assert acks.all == list(range(30))
    assert report.bytes_sent == sum(len(line) for line in lines)


# --- several batches in flight ---------------------------------------------------------------------


class ConcurrentTransport(FakeTransport):
    """A FakeTransport that allows `max_in_flight` posts at once and records how many overlapped."""

    def __init__(self, max_in_flight: int, *, hold: float = 0.02, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_in_flight = max_in_flight
        self.hold = hold
        self.threads: set[int] = set()
        self.peak = self._now = 0
        self._lock = threading.Lock()

    def post(self, body: bytes, attempt: int) -> Response:
        with self._lock:
            self._now += 1
            self.peak = max(self.peak, self._now)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.hold)
            return super().post(body, attempt)
        finally:
            with self._lock:
                self._now -= 1


class ThreadCheckingAcks(Acks):
    """Acks that must arrive in the thread that called deliver, never two at once."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.busy = False

    def __call__(self, indices: Sequence[int]) -> None:
        assert threading.get_ident() == self.thread and not self.busy
        self.busy = True
        time.sleep(0.001)
        super().__call__(indices)
        self.busy = False


def test_a_transport_without_a_limit_gets_one_request_at_a_time() -> None:
    transport = FakeTransport()
    report, acks, _ = run(payloads(30, size=200), transport, max_batch_bytes=2_000)
    assert acks.all == list(range(30)) and report.batches > 3


def test_batches_in_flight_are_acknowledged_in_the_calling_thread() -> None:
    transport = ConcurrentTransport(4)
    acks = ThreadCheckingAcks()
    report = deliver(payloads(60, size=200), transport, acks, max_batch_bytes=2_000, sleep=Sleeps())
    assert sorted(acks.all) == list(range(60)) and len(acks.all) == 60
    assert transport.peak == 4 and threading.get_ident() not in transport.threads
    assert report.acknowledged == 60 and report.batches == report.requests > 4
    assert all(sorted(call) == call for call in acks.calls)  # each call holds whole batches


def test_batches_that_finish_during_a_slow_callback_come_in_one_call() -> None:
    transport = ConcurrentTransport(4, hold=0.01)
    calls: list[list[int]] = []

    def slow(indices: Sequence[int]) -> None:
        calls.append(list(indices))
        time.sleep(0.1)  # e.g. a state write: the other batches in flight finish meanwhile

    report = deliver(payloads(60, size=200), transport, slow, max_batch_bytes=2_000, sleep=Sleeps())
    assert sorted(i for call in calls for i in call) == list(range(60))
    assert len(calls) < report.batches
    assert report.bytes_sent == sum(len(b) for b in transport.bodies)


def test_finished_batches_are_replaced_before_the_callback_runs() -> None:
    transport = ConcurrentTransport(2, hold=0.2)
    started: list[int] = []

    def slow(indices: Sequence[int]) -> None:
        time.sleep(0.05)  # e.g. the journal's fsync: the batches that took the finished ones' places are out
        started.append(transport._now + len(transport.bodies))  # posting or answered

    report = deliver(payloads(40, size=200), transport, slow, max_batch_bytes=2_000, sleep=Sleeps())
    assert report.batches > 4 and started[0] > 2


def test_max_in_flight_argument_overrides_the_transport() -> None:
    transport = ConcurrentTransport(8)
    acks = Acks()
    deliver(payloads(40, size=200), transport, acks, max_batch_bytes=2_000, max_in_flight=2, sleep=Sleeps())
    assert transport.peak == 2 and sorted(acks.all) == list(range(40))


@pytest.mark.parametrize("limit", [0, -1])
def test_max_in_flight_below_1_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        deliver(payloads(1), FakeTransport(), Acks(), max_in_flight=limit)


def test_retries_in_flight_keep_the_same_payloads() -> None:
    transport = ConcurrentTransport(4, script=[Response(500), requests.ConnectionError("reset"), Response(429)])
    acks = Acks()
    report = deliver(payloads(40, size=200), transport, acks, max_batch_bytes=2_000, sleep=Sleeps())
    assert sorted(acks.all) == list(range(40)) and report.retries == 3
    batches = [tuple(e["userId"] for e in json.loads(b)["batch"]) for b in transport.bodies]
    assert len(batches) == report.batches + 3 and len(set(batches)) == report.batches  # retries resend the same


def test_400_splits_with_batches_in_flight() -> None:
    transport = ConcurrentTransport(4, hold=0.005, default=rejects_bad)
    acks = Acks()
    report = deliver(payloads(80, bad=[3, 41, 77], size=200), transport, acks, max_batch_bytes=2_000, sleep=Sleeps())
    assert sorted(i for i, _ in report.rejected) == [3, 41, 77]
    assert sorted(acks.all) == sorted(set(range(80)) - {3, 41, 77}) and len(acks.all) == 77
    assert report.undelivered == [] and transport.peak > 1


def test_give_up_starts_no_new_batch_and_lets_batches_in_flight_finish() -> None:
    started = threading.Barrier(3, timeout=5)

    def answer(body: bytes) -> Response:
        first = json.loads(body)["batch"][0]["userId"]
        if first in ("0", "1", "2"):  # the first three batches start together
            started.wait()
        if first == "0":
            return Response(503)
        time.sleep(0.2)  # still in flight when batch 0 gives up
        return OK

    transport = ConcurrentTransport(3, hold=0, default=answer)
    acks = Acks()
    report = deliver(payloads(10, size=200), transport, acks, max_batch_bytes=400, policy=RetryPolicy(max_attempts=1))
    assert sorted(acks.all) == [1, 2]
    assert len(transport.bodies) == 3 == report.batches  # batches 3..9 never started
    assert report.undelivered == [0, 3, 4, 5, 6, 7, 8, 9]
    assert report.undelivered_reason == "gave up after 1 attempts: HTTP 503"


def test_batches_in_flight_stop_retrying_when_another_gives_up() -> None:
    answered = threading.Event()

    def answer(body: bytes) -> Response:
        if json.loads(body)["batch"][0]["userId"] == "1":
            answered.set()
            return Response(503)  # batch 1 then waits to retry
        answered.wait(5)
        time.sleep(0.2)  # while batch 1 waits, batch 0 gives up at once (its wait would pass the time budget)
        return Response(503, retry_after=10_000.0)

    transport = ConcurrentTransport(2, hold=0, default=answer)
    policy = RetryPolicy(base_seconds=30.0, max_total_seconds=100.0)  # batch 1 would wait 15 to 30 s
    started = time.monotonic()
    report = deliver(payloads(2, size=200), transport, Acks(), max_batch_bytes=400, policy=policy)
    assert time.monotonic() - started < 5  # its wait was cut short
    assert len(transport.bodies) == 2 and report.undelivered == [0, 1] and report.retries == 0
    assert report.undelivered_reason == "gave up after 1 attempts: HTTP 503"


def test_on_call_sees_every_request_of_every_worker() -> None:
    calls: list[Any] = []
    transport = ConcurrentTransport(4, script=[Response(500)])
    report = deliver(
        payloads(40, size=200), transport, Acks(), max_batch_bytes=2_000, on_call=calls.append, sleep=Sleeps()
    )
    assert len(calls) == report.requests == report.batches + 1
    assert sorted({c.batch for c in calls}) == list(range(1, report.batches + 1))
    assert sorted(c.attempt for c in calls).count(2) == 1


def test_an_error_in_the_callback_stops_delivery() -> None:
    transport = ConcurrentTransport(4)

    def fail(indices: Sequence[int]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        deliver(payloads(60, size=200), transport, fail, max_batch_bytes=2_000, sleep=Sleeps())
    assert len(transport.bodies) <= 8  # the first 4 and those started in place of finished ones; none after
