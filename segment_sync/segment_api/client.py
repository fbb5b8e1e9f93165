"""Delivering batches through a transport, with retries and 400 probing, and reporting what was acknowledged."""

from __future__ import annotations

import collections
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import pairwise

from segment_sync.error_text import first_line
from segment_sync.segment_api.batching import Payloads, batch_body, pack, utc_stamp
from segment_sync.segment_api.pacing import Pacer
from segment_sync.segment_api.transport import Response, Transport, check_max_in_flight

RETRYABLE_STATUSES = frozenset({408, 410, 429, 460}) | (frozenset(range(500, 600)) - {501, 505})
PROBE_SPLITS = 2  # a 400 is the request's when the parts of a batch this many splits down are all answered 400


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter that honours Retry-After."""

    max_attempts: int = 8
    base_seconds: float = 0.5
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 300.0
    max_total_seconds: float = 600.0
    max_throttled_seconds: float = 1800.0  # time spent waiting on 429s, which do not count as attempts

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        backoff = min(self.base_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return backoff * random.uniform(0.5, 1.0)


@dataclass
class DeliveryReport:
    """What happened to every batch of one delivery."""

    acknowledged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    undelivered: list[int] = field(default_factory=list)
    undelivered_reason: str | None = None
    requests: int = 0
    batches: int = 0
    retries: int = 0
    bytes_sent: int = 0


@dataclass(frozen=True)
class CallRecord:
    """One API call as the live debugger shows it."""

    at: str
    batch: int
    attempt: int
    status: int | None
    error: str | None
    latency_ms: float
    events: int
    bytes: int
    response: str
    events_json: bytes | memoryview  # the batch's events, comma-separated
    sent_at: str

    def redacted_request(self) -> bytes:
        """The request body as sent, without the write key."""
        return batch_body(self.events_json, None, sent_at=self.sent_at)


class _Probe:
    """A batch answered 400, split to tell a request Segment refuses from an event in it that Segment refuses.

    When the batch's halves and their halves (or its single events, for fewer than four) are all answered 400
    too, the answer does not depend on which events are sent: the request itself is refused. Once any part is
    answered otherwise, an event is at fault, and each part answered 400 is split until its bad events are alone.
    """

    def __init__(self, size: int, answer: Response):
        self.size, self.answer = size, answer
        self.open = 2  # parts sent or to be sent whose answer is still needed
        self.held: list[tuple[range, int, Response]] = []  # parts answered 400, with their depth and answer
        self.event_at_fault = False

    def refusal(self) -> str:
        """Why the batch's events were not delivered."""
        return (
            f"Segment refused the request itself, not an event in it: it answered {_answer(self.answer)} to a batch "
            f"of {self.size} events and to each part it was split into; check the write key and the endpoint"
        )


class _Splits:
    """The parts of the batches split after a 400, each with its probe and depth (splits from its batch)."""

    def __init__(self, pending: collections.deque[range], report: DeliveryReport):
        self.pending, self.report = pending, report
        self.parts: dict[range, tuple[_Probe, int]] = {}
        self.probes: list[_Probe] = []

    def on_400(self, batch: range, response: Response) -> _Probe | None:
        """Split or reject a batch answered 400; its probe when this answer shows the request itself is refused."""
        probe, depth = self.parts.pop(batch, (None, 0))
        if probe is None:
            if len(batch) == 1:
                self.reject(batch, response)
            else:
                probe = _Probe(len(batch), response)
                self.probes.append(probe)
                self._split(batch, probe, 1)
            return None
        if probe.event_at_fault or (depth < PROBE_SPLITS and len(batch) > 1):
            probe.open += not probe.event_at_fault  # this part's answer is in; its two halves' are needed
            self._split_or_reject(batch, response, probe, depth + 1)
            return None
        probe.held.append((batch, depth, response))
        probe.open -= 1
        return probe if probe.open == 0 else None

    def settle(self, batch: range) -> None:
        """A batch answered other than 400: if it is a part of a split batch, an event is at fault there."""
        probe, _ = self.parts.pop(batch, (None, 0))
        if probe is not None and not probe.event_at_fault:
            probe.event_at_fault = True
            for part, depth, answer in probe.held:
                self._split_or_reject(part, answer, probe, depth + 1)
            probe.held = []

    def held(self) -> list[int]:
        """The events of parts answered 400 whose probe did not settle: the request was refused, or sending stopped."""
        return [i for probe in self.probes for part, _, _ in probe.held for i in part]

    def reject(self, batch: range, response: Response) -> None:
        """Record every event of a batch as rejected with Segment's answer."""
        reason = f"Segment answered {_answer(response)}"
        self.report.rejected += [(i, reason) for i in batch]

    def _split_or_reject(self, batch: range, response: Response, probe: _Probe, depth: int) -> None:
        if len(batch) == 1:
            self.reject(batch, response)
        else:
            self._split(batch, probe, depth)

    def _split(self, batch: range, probe: _Probe, depth: int) -> None:
        half = len(batch) // 2
        first, second = batch[:half], batch[half:]
        self.pending.extendleft([second, first])  # next, first half first
        self.parts[first] = self.parts[second] = (probe, depth)


def _answer(response: Response) -> str:
    return f"{response.status}: {response.text.strip()[:200] or 'no body'}"


class _GaveUp(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Stopped(Exception):
    """Another batch gave up, so this one is not retried."""


def deliver(
    payloads: Sequence[bytes] | Payloads,
    transport: Transport,
    on_acknowledged: Callable[[Sequence[int]], None],
    *,
    policy: RetryPolicy | None = None,
    max_batch_bytes: int | None = None,
    pacer: Pacer | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    max_in_flight: int | None = None,
) -> DeliveryReport:
    """Send every payload in batches; call `on_acknowledged` with the indices of the accepted batches.

    `payloads` are serialized events, or `Payloads` (events joined in one buffer), which are packed and sent
    without any work per event.

    Up to `max_in_flight` batches (default: the transport's `max_in_flight`, else 1) are sent at once, each
    from a worker thread. `on_acknowledged` runs in the calling thread, one call at a time, once the batches
    that take the acknowledged ones' places have started; batches that finished while it was busy come
    together in the next call. `on_call` (which sees every request) runs under a lock. A 400 splits the
    batch in halves until the offending events are isolated, unless Segment refuses the request itself (see
    `_Probe`); other 4xx reject the batch. When a batch cannot be delivered after the retries, or a request
    is refused, no new batch starts, the batches in flight finish their current request without further
    retries, and every index neither acknowledged nor rejected is reported as undelivered (to be sent by
    the next run with the same messageIds). `sleep` (for tests) replaces the waits between retries.
    """
    policy = policy or RetryPolicy()
    pacer = pacer or Pacer(sleep=sleep or time.sleep)
    limit = getattr(transport, "max_in_flight", 1) if max_in_flight is None else max_in_flight
    check_max_in_flight(limit)
    report = DeliveryReport()
    limits = {"max_bytes": max_batch_bytes} if max_batch_bytes else {}
    events = payloads if isinstance(payloads, Payloads) else Payloads.of(payloads)
    pending = collections.deque(pack(events, transport.write_key, **limits))
    sender = _BatchSender(transport, events, policy, pacer, report, sleep, on_call)
    splits = _Splits(pending, report)
    running: dict[Future[Response], range] = {}
    pool = ThreadPoolExecutor(limit, thread_name_prefix="segment-delivery") if limit > 1 else _InlinePool()

    def start_batches() -> None:
        while pending and len(running) < limit and not sender.stopped.is_set():
            batch = pending.popleft()
            report.batches += 1
            running[pool.submit(sender.send, batch, report.batches)] = batch

    try:
        while running or (pending and not sender.stopped.is_set()):
            start_batches()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            acknowledged: list[range] = []
            for future in [f for f in running if f in done]:  # in the order the batches started
                batch = running.pop(future)
                try:
                    response = future.result()
                except _GaveUp as exc:
                    report.undelivered += batch
                    report.undelivered_reason = report.undelivered_reason or exc.reason
                    continue
                except _Stopped:
                    report.undelivered += batch
                    continue
                if response.status == 400:
                    if refused := splits.on_400(batch, response):  # its parts are reported as undelivered below
                        report.undelivered_reason = report.undelivered_reason or refused.refusal()
                        sender.stopped.set()  # as when a batch gives up
                    continue
                splits.settle(batch)
                if 200 <= response.status < 300:
                    acknowledged.append(batch)
                else:
                    splits.reject(batch, response)
            if acknowledged:  # batches that finished together (e.g. during a slow callback) go in one call
                if limit > 1:
                    start_batches()  # before the callback, which may wait on a disk (an fsync) for milliseconds
                indices = _indices(acknowledged)
                on_acknowledged(indices)
                report.acknowledged += len(indices)
    finally:
        sender.stopped.set()  # when the caller's callback raised, workers stop retrying
        pool.shutdown(wait=True)
    report.undelivered = sorted(report.undelivered + [i for batch in pending for i in batch] + splits.held())
    return report


def _indices(batches: list[range]) -> Sequence[int]:
    """The indices of batches in order: one range when they are back to back (the usual case), else a list."""
    if all(a.stop == b.start for a, b in pairwise(batches)):
        return range(batches[0].start, batches[-1].stop)
    return [i for batch in batches for i in batch]


class _InlinePool:
    """Runs each batch in the calling thread, for one request in flight."""

    def submit(self, fn: Callable[..., Response], *args: object) -> Future[Response]:
        future: Future[Response] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


class _BatchSender:
    """Posts one batch with retries; shared by the worker threads of one delivery."""

    def __init__(
        self,
        transport: Transport,
        payloads: Payloads,
        policy: RetryPolicy,
        pacer: Pacer,
        report: DeliveryReport,
        sleep: Callable[[float], None] | None,
        on_call: Callable[[CallRecord], None] | None,
    ):
        self.transport, self.payloads, self.policy, self.pacer = transport, payloads, policy, pacer
        self.report, self.sleep, self.on_call = report, sleep, on_call
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # guards the report's counters and on_call

    def send(self, batch: range, number: int) -> Response:
        """The first answer that is not retried; raises _GaveUp, or _Stopped when another batch gave up."""
        events = self.payloads.events(batch)
        policy, report = self.policy, self.report
        started = time.monotonic()
        tries = attempts = throttles = 0
        throttled_seconds = 0.0
        while True:
            tries += 1
            self.pacer.wait_turn(len(batch))
            sent_at = utc_stamp()  # fresh on every attempt, so Segment's clock-skew correction stays right
            body = batch_body(events, self.transport.write_key, sent_at=sent_at)
            with self._lock:
                report.requests += 1
                report.bytes_sent += len(body)
            called = time.perf_counter()
            try:
                response = self.transport.post(body, tries)
            except OSError as exc:  # requests' errors are OSErrors
                response, problem = None, f"{type(exc).__name__}: {first_line(exc, 200)}"
            if self.on_call is not None:
                record = CallRecord(
                    at=sent_at,
                    batch=number,
                    attempt=tries,
                    status=response.status if response is not None else None,
                    error=None if response is not None else problem,
                    latency_ms=(time.perf_counter() - called) * 1000,
                    events=len(batch),
                    bytes=len(body),
                    response=response.text if response is not None else "",
                    events_json=events,
                    sent_at=sent_at,
                )
                with self._lock:
                    self.on_call(record)
            if response is not None:
                if response.status not in RETRYABLE_STATUSES:
                    self.pacer.on_accepted()
                    return response
                problem = f"HTTP {response.status}"
            if response is not None and response.status == 429:
                # Throttling is not failure: slow down and wait, bounded by time rather than attempts.
                self.pacer.on_throttled()
                throttles += 1
                wait_seconds = policy.wait(throttles, response.retry_after)
                throttled_seconds += wait_seconds
                if throttled_seconds > policy.max_throttled_seconds:
                    raise self._gave_up(f"gave up after {throttled_seconds:.0f} s of rate limiting (HTTP 429)")
            else:
                attempts += 1
                wait_seconds = policy.wait(attempts, response.retry_after if response is not None else None)
                elapsed = time.monotonic() - started - throttled_seconds
                if attempts >= policy.max_attempts or elapsed + wait_seconds > policy.max_total_seconds:
                    raise self._gave_up(f"gave up after {attempts} attempts: {problem}")
            self._pause(wait_seconds)
            with self._lock:
                report.retries += 1

    def _gave_up(self, reason: str) -> _GaveUp:
        self.stopped.set()  # no new batch starts, and the batches in flight are not retried
        return _GaveUp(reason)

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; raise _Stopped when another batch gave up before or during the wait."""
        if self.stopped.is_set():
            raise _Stopped
        if self.sleep is not None:
            self.sleep(seconds)
        if self.stopped.wait(seconds if self.sleep is None else 0):
            raise _Stopped
