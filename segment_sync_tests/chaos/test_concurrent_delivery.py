"""Several batches in flight to the Segment emulator over real HTTP, with faults: nothing lost, nothing extra."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import orjson
import pytest

from segment_sync.segment_api.client import DeliveryReport, RetryPolicy, deliver
from segment_sync.segment_api.pacing import Pacer
from segment_sync.segment_api.transport import Response, SegmentHttp
from segment_sync_tests.support.segment_emulator import Fault, SegmentEmulator

KEY = "wk_concurrent_0123456789abcdefgh"
FAST_RETRIES = RetryPolicy(base_seconds=0.01, max_attempts=8)


@pytest.fixture
def emu() -> Iterator[SegmentEmulator]:
    """A fresh emulator with the test key."""
    with SegmentEmulator(KEY) as e:
        yield e


def events(n: int) -> list[bytes]:
    """Valid track payloads, each with its own messageId."""
    return [
        orjson.dumps(
            {"type": "track", "event": "Row Added", "userId": f"u{i}", "messageId": f"m-{i}", "pad": "x" * 150}
        )
        for i in range(n)
    ]


class Acks:
    """on_acknowledged: every index, and the thread each call came from."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.threads: set[int] = set()

    def __call__(self, indices: Sequence[int]) -> None:
        self.indices += indices
        self.threads.add(threading.get_ident())


def send(
    emu: SegmentEmulator,
    payloads: list[bytes],
    acks: Callable[[Sequence[int]], None],
    *,
    max_in_flight: int = 4,
    **kwargs: object,
) -> DeliveryReport:
    http = SegmentHttp(KEY, emu.url, timeout=1.0, max_in_flight=max_in_flight)
    kwargs = {"policy": FAST_RETRIES, "max_batch_bytes": 20_000, "pacer": Pacer(), **kwargs}
    return deliver(payloads, http, acks, **kwargs)  # type: ignore[arg-type]


def accepted_ids(emu: SegmentEmulator) -> list[str]:
    return [e["messageId"] for e in emu.accepted]


def test_faults_while_four_batches_are_in_flight_lose_and_add_nothing(emu: SegmentEmulator) -> None:
    payloads = events(3_000)
    emu.inject(
        Fault(500),
        Fault(429, "slow down", retry_after="0"),
        Fault(503, record_first=True),  # accepted, but the sender cannot know: its retry is a duplicate
        Fault(drop_connection=True),
        Fault(record_first=True, drop_connection=True),
        Fault(502, delay=0.05),
        Fault(200, delay=1.5, record_first=True),  # accepted, then the client times out: another duplicate
    )
    acks = Acks()
    report = send(emu, payloads, acks)
    assert sorted(acks.indices) == list(range(3_000))
    assert acks.threads == {threading.get_ident()}
    assert (report.acknowledged, report.rejected, report.undelivered, report.retries) == (3_000, [], [], 7)
    assert report.batches > 20 and report.requests == report.batches + 7
    assert set(accepted_ids(emu)) == {f"m-{i}" for i in range(3_000)}
    ambiguous = [r for r in emu.requests if r.fault is not None and r.fault.record_first]
    assert len(ambiguous) == 3  # only their events are duplicates, with the same messageIds
    assert len(emu.accepted) - 3_000 == emu.duplicates == sum(len(r.json()["batch"]) for r in ambiguous)
    sent = {orjson.loads(p)["messageId"]: orjson.loads(p) for p in payloads}
    assert all({k: v for k, v in e.items() if k != "receivedAt"} == sent[e["messageId"]] for e in emu.accepted)


def test_a_400_splits_one_batch_while_others_are_in_flight(emu: SegmentEmulator) -> None:
    payloads = events(2_000)
    payloads[1_234] = b'{"type":"track","event":"E","userId":"bad","messageId":"bad","x":NaN}'  # invalid JSON
    acks = Acks()
    report = send(emu, payloads, acks)
    assert report.rejected == [(1_234, "Segment answered 400: Bad Request")]
    assert sorted(acks.indices) == [i for i in range(2_000) if i != 1_234]
    assert report.undelivered == [] and emu.duplicates == 0
    assert sorted(accepted_ids(emu)) == sorted(f"m-{i}" for i in range(2_000) if i != 1_234)


def test_giving_up_midway_reports_exactly_what_was_not_acknowledged(emu: SegmentEmulator) -> None:
    payloads = events(4_000)
    acks = Acks()

    def ack_then_break(indices: Sequence[int]) -> None:
        if not acks.indices:
            emu.inject(*[Fault(503)] * 500)  # Segment goes down after the first acknowledged batch
        acks(indices)

    report = send(emu, payloads, ack_then_break, policy=RetryPolicy(base_seconds=0.01, max_attempts=2))
    assert report.undelivered_reason == "gave up after 2 attempts: HTTP 503"
    acknowledged, undelivered = set(acks.indices), set(report.undelivered)
    assert len(acknowledged) == len(acks.indices) and not acknowledged & undelivered
    assert acknowledged | undelivered == set(range(4_000)) and report.rejected == []
    assert report.undelivered == sorted(undelivered)
    assert set(accepted_ids(emu)) == {f"m-{i}" for i in acknowledged} and emu.duplicates == 0
    batches_posted = {r.json()["batch"][0]["messageId"] for r in emu.requests}
    assert len(batches_posted) == report.batches
    failed = {f"m-{i}" for i in undelivered} & batches_posted
    assert 1 <= len(failed) <= 4  # the batch that gave up and those in flight with it; none started after


def test_four_requests_are_in_flight_at_once(emu: SegmentEmulator) -> None:
    emu.latency_seconds = 0.2
    http = SegmentHttp(KEY, emu.url, max_in_flight=4)
    lock, now, peak = threading.Lock(), [0], [0]
    post = http.post

    def counting_post(body: bytes, attempt: int) -> Response:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            return post(body, attempt)
        finally:
            with lock:
                now[0] -= 1

    http.post = counting_post  # type: ignore[method-assign]
    started = time.monotonic()
    report = deliver(events(800), http, Acks(), max_batch_bytes=20_000, pacer=Pacer())
    elapsed = time.monotonic() - started
    assert report.batches == 10 and report.acknowledged == 800
    assert peak[0] == 4 and elapsed < 1.0  # three rounds of 0.2 s; one at a time would take 2 s
