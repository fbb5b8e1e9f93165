"""Packing serialized events into request bodies within Segment's batch limits."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    import polars as pl

MAX_EVENT_BYTES = 32_000  # Segment's limit per event
MAX_BATCH_BYTES = 475_000  # under Segment's 500 KB per request, with room for the envelope
MIN_BATCH_BYTES = MAX_EVENT_BYTES + 94  # one event of the largest size in a body with a 32-character write key
MAX_BATCH_EVENTS = 2_500
_SENT_AT_CHARS = len("2026-01-01T00:00:00.000Z")


def check_max_batch_bytes(limit: int) -> None:
    """Refuse a request body limit that cannot hold the largest event or exceeds Segment's."""
    if not MIN_BATCH_BYTES <= limit <= MAX_BATCH_BYTES:
        raise ValueError(
            f"max_batch_bytes is {limit}; use {MIN_BATCH_BYTES:,} to {MAX_BATCH_BYTES:,}: a request must hold one "
            f"event of the largest size ({MAX_EVENT_BYTES:,} bytes) and stay within Segment's 500 KB limit"
        )


class Joined:
    """Byte strings stored back to back in one buffer, so that consecutive ones are read as a single slice."""

    def __init__(self, data: bytes | memoryview, starts: Sequence[int]):
        self.data = memoryview(data)
        self.starts = starts  # where each item begins, then where the last one ends

    @classmethod
    def of(cls, items: Iterable[bytes]) -> Joined:
        """The items of a Python iterable."""
        items = list(items)
        return cls(b"".join(items), list(accumulate(map(len, items), initial=0)))

    @classmethod
    def from_series(cls, items: pl.Series) -> Joined:
        """The items of a String or Binary series without nulls, copied once into one buffer (no object per item)."""
        import polars as pl  # only runs need Polars, not loading the definitions

        if items.null_count():
            raise ValueError(f"series {items.name!r} has {items.null_count()} nulls; only byte strings can be joined")
        if items.is_empty():
            return cls(b"", [0])
        array = items.cast(pl.Binary).to_arrow(compat_level=pl.CompatLevel.oldest())  # large_binary: int64 offsets
        _, offsets, data = array.buffers()
        starts = memoryview(offsets).cast("B").cast("q")[array.offset : array.offset + len(array) + 1]
        return cls(memoryview(data) if data is not None else b"", starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        return bytes(self.span(i, i + 1))

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def span(self, start: int, stop: int) -> memoryview:
        """Items start to stop - 1, back to back."""
        return self.data[self.starts[start] : self.starts[stop]]

    def spans(self, indices: Iterable[int]) -> Iterator[memoryview]:
        """The items at these indices, in their order: one slice per run of consecutive indices."""
        if isinstance(indices, range) and indices.step == 1:  # one run, without a look at each index
            if indices:
                yield self.span(indices.start, indices.stop)
            return
        start = stop = -1
        for i in indices:
            if i != stop:
                if stop > start:
                    yield self.span(start, stop)
                start = i
            stop = i + 1
        if stop > start:
            yield self.span(start, stop)


class Payloads(Joined):
    """Serialized events back to back, each followed by a comma: the events of a batch are one slice."""

    @classmethod
    def of(cls, items: Iterable[bytes]) -> Payloads:
        """The events of a Python iterable."""
        joined = Joined.of(p + b"," for p in items)
        return cls(joined.data, joined.starts)

    @classmethod
    def from_series(cls, items: pl.Series) -> Payloads:
        """The events of a String or Binary series without nulls."""
        import polars as pl

        joined = Joined.from_series(pl.select(pl.lit(items).cast(pl.Binary) + pl.lit(b",")).to_series())
        return cls(joined.data, joined.starts)

    def __getitem__(self, i: int) -> bytes:
        return super().__getitem__(i)[:-1]

    def events(self, batch: range) -> memoryview:
        """The JSON of a batch's events, comma-separated (the inside of the `batch` array)."""
        return self.span(batch.start, batch.stop)[:-1]


def envelope_bytes(write_key: str | None) -> int:
    """Bytes a batch body spends outside its events (brackets, sentAt, writeKey)."""
    return len(request_body([], write_key, sent_at="x" * _SENT_AT_CHARS))


def pack(
    payloads: Sequence[bytes] | Payloads,
    write_key: str | None,
    *,
    max_bytes: int = MAX_BATCH_BYTES,
    max_events: int = MAX_BATCH_EVENTS,
) -> Iterator[range]:
    """Consecutive index ranges of `payloads`, each fitting one request body (whole body measured).

    Greedy: a batch closes before the event that would push its body past `max_bytes` or its count past
    `max_events`; an event too big on its own goes alone.
    """
    if isinstance(payloads, Payloads):
        ends = payloads.starts  # each event's bytes plus its comma, summed
    else:
        ends = list(accumulate((len(p) + 1 for p in payloads), initial=0))
    room = max_bytes - envelope_bytes(write_key) + 1  # the last event of a batch has no comma
    count = len(ends) - 1
    start = 0
    while start < count:
        last = min(count, start + max_events)
        stop = bisect.bisect_right(ends, ends[start] + room, start + 1, last + 1) - 1
        stop = max(stop, start + 1)
        yield range(start, stop)
        start = stop


def utc_stamp() -> str:
    """Now, as Segment's timestamps look: ISO-8601 in UTC with milliseconds and a Z."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_body(payloads: Sequence[bytes], write_key: str | None, *, sent_at: str | None = None) -> bytes:
    """The exact JSON body of a `/v1/batch` request; `writeKey` is left out when there is none."""
    return batch_body(b",".join(payloads), write_key, sent_at=sent_at)


def batch_body(events: bytes | memoryview, write_key: str | None, *, sent_at: str | None = None) -> bytes:
    """`request_body` from the events' JSON already joined by commas (`Payloads.events`)."""
    stamp = sent_at or utc_stamp()
    key = b',"writeKey":' + orjson.dumps(write_key) if write_key else b""
    return b"".join((b'{"batch":[', events, b'],"sentAt":"', stamp.encode(), b'"', key, b"}"))
