"""Packing events into `/v1/batch` bodies: never over the byte or event limit, and filled up."""

from __future__ import annotations

import json
import random
import re

import orjson
import polars as pl
import pytest

from segment_sync.segment_api.batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    Joined,
    Payloads,
    envelope_bytes,
    pack,
    request_body,
)

SENT_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
WRITE_KEY = "wk_0123456789abcdef0123456789abcd"


def event_of_size(n: int, i: int = 0) -> bytes:
    """A JSON event of exactly n bytes."""
    head = orjson.dumps({"type": "track", "event": "E", "userId": str(i), "properties": {"pad": ""}})
    pad = n - len(head)
    assert pad >= 0
    out = orjson.dumps({"type": "track", "event": "E", "userId": str(i), "properties": {"pad": "x" * pad}})
    assert len(out) == n
    return out


def bodies(payloads: list[bytes], write_key: str | None, **limits: int) -> list[tuple[range, bytes]]:
    ranges = list(pack(payloads, write_key, **limits))
    return [(r, request_body([payloads[i] for i in r], write_key)) for r in ranges]


def assert_partition(ranges: list[range], n: int) -> None:
    assert [i for r in ranges for i in r] == list(range(n))
    assert all(len(r) > 0 for r in ranges)


# --- request bodies --------------------------------------------------------------------------------


def test_request_body_shape() -> None:
    events = [b'{"type":"track","event":"A","userId":"1"}', b'{"type":"identify","userId":"2"}']
    body = request_body(events, WRITE_KEY)
    parsed = json.loads(body)
    assert list(parsed) == ["batch", "sentAt", "writeKey"]
    assert parsed["batch"] == [json.loads(e) for e in events]
    assert parsed["writeKey"] == WRITE_KEY
    assert SENT_AT.fullmatch(parsed["sentAt"])


def test_request_body_exact_bytes() -> None:
    body = request_body([b"{}", b"[]"], "k", sent_at="2026-01-01T00:00:00.000Z")
    assert body == b'{"batch":[{},[]],"sentAt":"2026-01-01T00:00:00.000Z","writeKey":"k"}'


@pytest.mark.parametrize("write_key", [None, ""])
def test_no_write_key_field_without_a_key(write_key: str | None) -> None:
    body = request_body([b"{}"], write_key, sent_at="2026-01-01T00:00:00.000Z")
    assert body == b'{"batch":[{}],"sentAt":"2026-01-01T00:00:00.000Z"}'
    assert b"writeKey" not in request_body([b"{}"], write_key)


def test_write_key_is_json_escaped() -> None:
    key = 'we"ird\\kéy'
    assert json.loads(request_body([], key))["writeKey"] == key


def test_sent_at_is_now_utc() -> None:
    import datetime as dt

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = json.loads(request_body([], None))["sentAt"]
    after = dt.datetime.now(dt.UTC)
    parsed = dt.datetime.fromisoformat(stamp)
    assert before <= parsed <= after


@pytest.mark.parametrize("write_key", [None, WRITE_KEY, "k"])
def test_envelope_bytes_matches_a_real_empty_body(write_key: str | None) -> None:
    assert envelope_bytes(write_key) == len(request_body([], write_key))


# --- packing ---------------------------------------------------------------------------------------


def test_pack_empty() -> None:
    assert list(pack([], WRITE_KEY)) == []


def test_pack_small_fits_one_batch() -> None:
    payloads = [event_of_size(100, i) for i in range(10)]
    assert list(pack(payloads, WRITE_KEY)) == [range(0, 10)]


@pytest.mark.parametrize("write_key", [None, WRITE_KEY])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_body_within_limits_and_greedy(seed: int, write_key: str | None) -> None:
    rng = random.Random(seed)
    max_bytes = 5_000
    payloads = [event_of_size(rng.randint(100, 1_500), i) for i in range(400)]
    out = bodies(payloads, write_key, max_bytes=max_bytes, max_events=MAX_BATCH_EVENTS)
    ranges = [r for r, _ in out]
    assert_partition(ranges, len(payloads))
    assert len(ranges) > 10
    for r, body in out:
        assert len(body) <= max_bytes
        assert json.loads(body)["batch"] == [json.loads(payloads[i]) for i in r]
    for (r, body), (nxt, _) in zip(out, out[1:], strict=False):
        # Greedy: the next event would not have fit in this body.
        grown = request_body([payloads[i] for i in range(r.start, nxt.start + 1)], write_key)
        assert len(grown) > max_bytes, (r, len(body), len(grown))


def test_default_limit_with_large_events() -> None:
    payloads = [event_of_size(30_000, i) for i in range(40)]
    out = bodies(payloads, WRITE_KEY)
    # 15 events take 450,014 bytes plus the envelope; a 16th would pass 475,000.
    assert [len(r) for r, _ in out] == [15, 15, 10]
    for _, body in out:
        assert len(body) <= MAX_BATCH_BYTES == 475_000


def test_event_count_limit() -> None:
    payloads = [b'{"i":1}'] * 6_000
    ranges = list(pack(payloads, WRITE_KEY))
    assert [len(r) for r in ranges] == [2_500, 2_500, 1_000]
    assert MAX_BATCH_EVENTS == 2_500


def test_event_count_limit_custom() -> None:
    payloads = [b"{}"] * 7
    assert list(pack(payloads, None, max_events=3)) == [range(0, 3), range(3, 6), range(6, 7)]


def test_batch_filled_exactly_to_the_byte() -> None:
    max_bytes = 2_000
    room = max_bytes - envelope_bytes(WRITE_KEY)
    # Two events plus one comma fill the body to the byte.
    a = event_of_size(room // 2)
    b = event_of_size(room - len(a) - 1, 1)
    assert list(pack([a, b], WRITE_KEY, max_bytes=max_bytes)) == [range(0, 2)]
    assert len(request_body([a, b], WRITE_KEY)) == max_bytes
    # One byte more and the second event goes to its own batch.
    b2 = event_of_size(len(b) + 1, 1)
    assert list(pack([a, b2], WRITE_KEY, max_bytes=max_bytes)) == [range(0, 1), range(1, 2)]


def test_single_event_just_under_the_limit() -> None:
    max_bytes = 40_000
    big = event_of_size(max_bytes - envelope_bytes(WRITE_KEY))
    small = event_of_size(100, 1)
    ranges = list(pack([small, big, small], WRITE_KEY, max_bytes=max_bytes))
    assert ranges == [range(0, 1), range(1, 2), range(2, 3)]
    assert len(request_body([big], WRITE_KEY)) == max_bytes


def test_single_event_under_the_limit_at_default_size() -> None:
    big = event_of_size(MAX_BATCH_BYTES - envelope_bytes(None))
    (r,) = pack([big], None)
    assert r == range(0, 1)
    assert len(request_body([big], None)) == MAX_BATCH_BYTES


def test_write_key_length_counts() -> None:
    # The same events need more batches when a long write key eats into each body.
    payloads = [event_of_size(400, i) for i in range(100)]
    without = list(pack(payloads, None, max_bytes=2_060))
    with_key = list(pack(payloads, "k" * 500, max_bytes=2_060))
    assert [len(r) for r in without][:3] == [5, 5, 5]
    assert [len(r) for r in with_key][:3] == [3, 3, 3]
    for r in with_key:
        assert len(request_body([payloads[i] for i in r], "k" * 500)) <= 2_060


# --- events joined in one buffer -------------------------------------------------------------------


def test_payloads_from_a_series_are_the_events_each_followed_by_a_comma() -> None:
    events = [b'{"a":1}', b'{"b":"\xc3\xa9"}', b"{}"]
    for joined in (Payloads.from_series(pl.Series(events)), Payloads.of(events)):
        assert len(joined) == 3 and list(joined) == events
        assert bytes(joined.events(range(0, 3))) == b",".join(events)
        assert bytes(joined.events(range(1, 2))) == events[1]
    assert len(Payloads.from_series(pl.Series([], dtype=pl.Binary))) == 0


def test_joined_from_a_sliced_series_of_several_chunks() -> None:
    chunks = [pl.Series([f"a{i}" for i in range(50)]), pl.Series([f"b{i}\n" for i in range(50)])]
    texts = pl.concat(chunks, rechunk=False)
    part = texts.slice(45, 10)
    joined = Joined.from_series(part)
    assert list(joined) == [t.encode() for t in part.to_list()]
    assert bytes(joined.span(0, 10)) == "".join(part.to_list()).encode()


def test_joined_refuses_nulls() -> None:
    with pytest.raises(ValueError, match="nulls"):
        Joined.from_series(pl.Series("lines", ["a", None]))


@pytest.mark.parametrize(
    ("indices", "slices"),
    [([], []), ([0, 1, 2], [b"abc"]), ([2, 3, 0, 1], [b"cd", b"ab"]), ([1, 3], [b"b", b"d"]), ([3, 2], [b"d", b"c"])],
)
def test_spans_give_one_slice_per_run_of_consecutive_indices(indices: list[int], slices: list[bytes]) -> None:
    assert [bytes(s) for s in Joined.of([b"a", b"b", b"c", b"d"]).spans(indices)] == slices


@pytest.mark.parametrize("indices", [range(0), range(1, 3), range(4), range(0, 4, 2), range(3, 0, -1)])
def test_spans_of_a_range_are_the_spans_of_its_indices(indices: range) -> None:
    joined = Joined.of([b"a", b"b", b"c", b"d"])
    assert [bytes(s) for s in joined.spans(indices)] == [bytes(s) for s in joined.spans(list(indices))]


def test_packing_joined_payloads_is_packing_the_list() -> None:
    rng = random.Random(7)
    events = [event_of_size(rng.randint(100, 1_500), i) for i in range(400)]
    joined = Payloads.from_series(pl.Series(events))
    for limits in ({"max_bytes": 5_000}, {"max_events": 7}, {}):
        assert list(pack(joined, WRITE_KEY, **limits)) == list(pack(events, WRITE_KEY, **limits))
