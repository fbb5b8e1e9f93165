"""Pacing requests to Segment: optional rate limits, and a slow-down that grows with each 429."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

MAX_PENALTY_SECONDS = 5.0


class Pacer:
    """Spaces requests to stay under requests/s and events/s limits, plus a penalty that 429s raise.

    Thread-safe: the requests of one delivery's worker threads, and of syncs sharing a write key, take turns.
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        events_per_second: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.requests_per_second = requests_per_second
        self.events_per_second = events_per_second
        self.penalty = 0.0
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait_turn(self, events: int) -> float:
        """Sleep until a request carrying `events` events may go; return the seconds waited."""
        with self._lock:
            interval = self.penalty
            if self.requests_per_second:
                interval = max(interval, 1 / self.requests_per_second)
            if self.events_per_second:
                interval = max(interval, events / self.events_per_second)
            now = self._clock()
            start = max(now, self._next)
            self._next = start + interval
        if start > now:
            self._sleep(start - now)
        return start - now

    def on_throttled(self) -> None:
        """Segment answered 429: space requests further apart."""
        with self._lock:
            self.penalty = min(max(self.penalty * 2, 0.05), MAX_PENALTY_SECONDS)

    def on_accepted(self) -> None:
        """A request went through: recover speed gradually."""
        with self._lock:
            if self.penalty:
                self.penalty = self.penalty * 0.8 if self.penalty > 0.01 else 0.0


_PACERS: dict[tuple[str, float | None, float | None], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(write_key: str | None, requests_per_second: float | None, events_per_second: float | None) -> Pacer:
    """The pacer shared by every sync in this process that sends with this write key."""
    key_id = hashlib.sha256((write_key or "").encode()).hexdigest()[:16]  # never keep the key itself
    with _PACERS_LOCK:
        return _PACERS.setdefault(
            (key_id, requests_per_second, events_per_second), Pacer(requests_per_second, events_per_second)
        )
