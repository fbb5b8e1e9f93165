"""Pacing: rate limits per write key and the slow-down that 429s cause."""

from __future__ import annotations

import threading

import pytest

from segment_sync.segment_api.pacing import MAX_PENALTY_SECONDS, Pacer, pacer_for


class FakeClock:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_no_limits_no_waiting():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert [pacer.wait_turn(1000) for _ in range(3)] == [0, 0, 0] and clock.sleeps == []


def test_requests_per_second_spaces_requests():
    clock = FakeClock()
    pacer = Pacer(requests_per_second=4, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        pacer.wait_turn(10)
    assert clock.sleeps == [0.25, 0.25]


def test_events_per_second_spaces_by_batch_size():
    clock = FakeClock()
    pacer = Pacer(events_per_second=1000, clock=clock, sleep=clock.sleep)
    pacer.wait_turn(500)
    pacer.wait_turn(2000)
    pacer.wait_turn(10)
    assert clock.sleeps == [0.5, 2.0]  # each request waits for the previous one's share


def test_429s_raise_a_penalty_that_successes_wear_off():
    pacer = Pacer()
    for _ in range(10):
        pacer.on_throttled()
    assert pacer.penalty == MAX_PENALTY_SECONDS
    for _ in range(60):
        pacer.on_accepted()
    assert pacer.penalty == 0.0


def test_penalty_applies_on_top_of_no_limit():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.on_throttled()
    pacer.wait_turn(1)
    pacer.wait_turn(1)
    assert clock.sleeps == [pytest.approx(0.05)]


def test_syncs_with_one_write_key_share_a_pacer():
    assert pacer_for("wk-a", 10, None) is pacer_for("wk-a", 10, None)
    assert pacer_for("wk-a", 10, None) is not pacer_for("wk-b", 10, None)


def test_threads_take_turns():
    clock = FakeClock()  # stands still, so every wait is the schedule itself
    waits: list[float] = []
    pacer = Pacer(requests_per_second=100, clock=clock, sleep=lambda s: None)

    def worker():
        for _ in range(25):
            waits.append(round(pacer.wait_turn(1), 6))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [round(i * 0.01, 6) for i in range(200)]  # one turn each, 10 ms apart


def test_throttling_from_many_threads_is_counted_once_each():
    pacer = Pacer()
    threads = [threading.Thread(target=pacer.on_throttled) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pacer.penalty == pytest.approx(0.05 * 2**5)
