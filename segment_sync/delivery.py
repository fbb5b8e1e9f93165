"""Sending batches to Segment (or to a local outbox), with retries, and reporting what was acknowledged."""

from __future__ import annotations

import email.utils
import gzip
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from segment_sync import __version__
from segment_sync.batching import pack, request_body, utc_stamp
from segment_sync.errors import first_line
from segment_sync.pacing import Pacer

RETRYABLE_STATUSES = frozenset({408, 410, 429, 460}) | (frozenset(range(500, 600)) - {501, 505})
DEFAULT_ENDPOINT = "https://api.segment.io"


@dataclass(frozen=True)
class Response:
    """A transport's answer to one POST."""

    status: int
    text: str = ""
    retry_after: float | None = None


class Transport(Protocol):
    """Somewhere request bodies go: Segment over HTTP, or a local outbox."""

    write_key: str | None

    def post(self, body: bytes, attempt: int) -> Response:
        """Send one body; raise OSError or requests.RequestException when nothing was answered."""
        ...


class SegmentHttp:
    """POSTs to Segment's `/v1/batch` with Basic auth and the write key in the body."""

    def __init__(
        self, write_key: str, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 30.0, gzip_body: bool = True
    ):
        if not write_key:
            raise ValueError("the Segment write key is empty; set SEGMENT_WRITE_KEY or use the outbox destination")
        self.write_key = write_key
        self.url = endpoint.rstrip("/").removesuffix("/v1") + "/v1/batch"
        self.timeout = timeout
        self.gzip_body = gzip_body
        self.session = requests.Session()
        self.session.auth = (write_key, "")
        self.session.headers.update({"Content-Type": "application/json", "User-Agent": f"segment-sync/{__version__}"})

    def post(self, body: bytes, attempt: int) -> Response:
        """POST one batch body."""
        headers = {"X-Retry-Count": str(attempt - 1)} if attempt > 1 else {}
        if self.gzip_body:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        resp = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        return Response(resp.status_code, resp.text[:500], _retry_after(resp.headers))

    def __repr__(self) -> str:  # never show the write key
        return f"SegmentHttp(url={self.url!r})"


class Outbox:
    """Appends each request body as one JSON line to a local file instead of sending it."""

    write_key = None

    def __init__(self, path: Path):
        self.path = path

    def post(self, body: bytes, attempt: int) -> Response:
        """Write one batch body durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(body + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return Response(200, '{"success":true}')


def _retry_after(headers: requests.structures.CaseInsensitiveDict) -> float | None:
    for name in ("Retry-After", "X-RateLimit-Reset"):
        raw = headers.get(name)
        if not raw:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                continue  # an unreadable header: fall back to exponential backoff
        if math.isfinite(seconds):
            return seconds
    return None


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
    payloads: Sequence[bytes]
    sent_at: str

    def redacted_request(self) -> bytes:
        """The request body as sent, without the write key."""
        return request_body(self.payloads, None, sent_at=self.sent_at)


class _GaveUp(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def deliver(
    payloads: Sequence[bytes],
    transport: Transport,
    on_acknowledged: Callable[[Sequence[int]], None],
    *,
    policy: RetryPolicy | None = None,
    max_batch_bytes: int | None = None,
    pacer: Pacer | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Send every payload in batches; call `on_acknowledged` with the indices of each accepted batch.

    A 400 splits the batch in halves until the offending events are isolated; other 4xx reject the
    batch. When a batch cannot be delivered after the retries, sending stops and the rest is reported
    as undelivered (to be sent by the next run with the same messageIds). `on_call` sees every request.
    """
    policy = policy or RetryPolicy()
    pacer = pacer or Pacer(sleep=sleep)
    report = DeliveryReport()
    limits = {"max_bytes": max_batch_bytes} if max_batch_bytes else {}
    pending = [list(r) for r in pack(payloads, transport.write_key, **limits)]
    pending.reverse()
    while pending:
        batch = pending.pop()
        report.batches += 1
        try:
            response = _post_with_retries(
                transport, [payloads[i] for i in batch], policy, pacer, report, sleep, on_call
            )
        except _GaveUp as exc:
            report.undelivered = batch + [i for rest in reversed(pending) for i in rest]
            report.undelivered_reason = exc.reason
            break
        if 200 <= response.status < 300:
            on_acknowledged(batch)
            report.acknowledged += len(batch)
        elif response.status == 400 and len(batch) > 1:
            half = len(batch) // 2
            pending += [batch[half:], batch[:half]]
        else:
            reason = f"Segment answered {response.status}: {response.text.strip()[:200] or 'no body'}"
            report.rejected += [(i, reason) for i in batch]
    return report


def _post_with_retries(
    transport: Transport,
    batch: list[bytes],
    policy: RetryPolicy,
    pacer: Pacer,
    report: DeliveryReport,
    sleep: Callable[[float], None],
    on_call: Callable[[CallRecord], None] | None,
) -> Response:
    started = time.monotonic()
    tries = attempts = throttles = 0
    throttled_seconds = 0.0
    while True:
        tries += 1
        pacer.wait_turn(len(batch))
        sent_at = utc_stamp()  # fresh on every attempt, so Segment's clock-skew correction stays right
        body = request_body(batch, transport.write_key, sent_at=sent_at)
        report.requests += 1
        report.bytes_sent += len(body)
        called = time.perf_counter()
        try:
            response = transport.post(body, tries)
        except (OSError, requests.RequestException) as exc:
            response, problem = None, f"{type(exc).__name__}: {first_line(exc, 200)}"
        if on_call is not None:
            on_call(
                CallRecord(
                    at=sent_at,
                    batch=report.batches,
                    attempt=tries,
                    status=response.status if response is not None else None,
                    error=None if response is not None else problem,
                    latency_ms=(time.perf_counter() - called) * 1000,
                    events=len(batch),
                    bytes=len(body),
                    response=response.text if response is not None else "",
                    payloads=batch,
                    sent_at=sent_at,
                )
            )
        if response is not None:
            if response.status not in RETRYABLE_STATUSES:
                pacer.on_accepted()
                return response
            problem = f"HTTP {response.status}"
        if response is not None and response.status == 429:
            # Throttling is not failure: slow down and wait, bounded by time rather than attempts.
            pacer.on_throttled()
            throttles += 1
            wait = policy.wait(throttles, response.retry_after)
            throttled_seconds += wait
            if throttled_seconds > policy.max_throttled_seconds:
                raise _GaveUp(f"gave up after {throttled_seconds:.0f} s of rate limiting (HTTP 429)")
        else:
            attempts += 1
            wait = policy.wait(attempts, response.retry_after if response is not None else None)
            elapsed = time.monotonic() - started - throttled_seconds
            if attempts >= policy.max_attempts or elapsed + wait > policy.max_total_seconds:
                raise _GaveUp(f"gave up after {attempts} attempts: {problem}")
        report.retries += 1
        sleep(wait)
