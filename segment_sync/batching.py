"""Packing serialized events into request bodies within Segment's batch limits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import orjson

MAX_BATCH_BYTES = 475_000
MAX_BATCH_EVENTS = 2_500
_SENT_AT_CHARS = len("2026-01-01T00:00:00.000Z")


def envelope_bytes(write_key: str | None) -> int:
    """Bytes a batch body spends outside its events (brackets, sentAt, writeKey)."""
    return len(request_body([], write_key, sent_at="x" * _SENT_AT_CHARS))


def pack(
    payloads: Sequence[bytes],
    write_key: str | None,
    *,
    max_bytes: int = MAX_BATCH_BYTES,
    max_events: int = MAX_BATCH_EVENTS,
) -> Iterator[range]:
    """Consecutive index ranges of `payloads`, each fitting one request body (whole body measured)."""
    overhead = envelope_bytes(write_key)
    start, size = 0, overhead
    for i, payload in enumerate(payloads):
        added = len(payload) + (1 if i > start else 0)
        if i > start and (size + added > max_bytes or i - start >= max_events):
            yield range(start, i)
            start, size, added = i, overhead, len(payload)
        size += added
    if start < len(payloads):
        yield range(start, len(payloads))


def utc_stamp() -> str:
    """Now, as Segment's timestamps look: ISO-8601 in UTC with milliseconds and a Z."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_body(payloads: Sequence[bytes], write_key: str | None, *, sent_at: str | None = None) -> bytes:
    """The exact JSON body of a `/v1/batch` request; `writeKey` is left out when there is none."""
    stamp = sent_at or utc_stamp()
    key = b',"writeKey":' + orjson.dumps(write_key) if write_key else b""
    return b'{"batch":[' + b",".join(payloads) + b'],"sentAt":"' + stamp.encode() + b'"' + key + b"}"
