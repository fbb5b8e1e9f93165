"""The Segment emulator itself, over real HTTP: routes, auth, limits, per-event discards, dedup and faults."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_sync_tests.support.segment_emulator import SINGLE_ROUTES, Fault, SegmentEmulator

KEY = "wk_emulator_0123456789abcdefghij"


@pytest.fixture
def emu() -> Iterator[SegmentEmulator]:
    """A fresh emulator with the test key."""
    with SegmentEmulator(KEY) as e:
        yield e


def track(n: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid track event."""
    return {"type": "track", "event": "Row Added", "userId": f"u{n}", "messageId": f"m-{n}", **fields}


def post(
    emu: SegmentEmulator,
    payload: Any,
    path: str = "/v1/batch",
    *,
    auth: str | None = KEY,
    compress: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> requests.Response:
    """POST a JSON value (or raw bytes) with Basic auth for `auth`, optionally gzipped."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if compress:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    basic = (auth, "") if auth is not None else None
    return requests.post(emu.url + path, data=data, headers=sent, auth=basic, timeout=timeout)


def batch(*events: Any, **envelope: Any) -> dict[str, Any]:
    """A batch body."""
    return {"batch": list(events), "sentAt": "2026-01-01T00:00:00.000Z", **envelope}


def padded_body(size: int) -> bytes:
    """A valid batch body of exactly `size` bytes (one small event plus a padding field)."""
    base = json.dumps(batch(track(), pad="")).encode()
    return json.dumps(batch(track(), pad="x" * (size - len(base)))).encode()


# --- routes and answers ---


def test_batch_is_accepted_and_recorded(emu: SegmentEmulator) -> None:
    resp = post(emu, batch(track(1), {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}))
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert [e["type"] for e in emu.accepted] == ["track", "identify"]
    assert all(e["receivedAt"].endswith("Z") for e in emu.accepted)
    assert emu.accepted[0]["event"] == "Row Added" and emu.discarded == []
    (req,) = emu.requests
    assert (req.method, req.path, req.status) == ("POST", "/v1/batch", 200)
    assert req.headers["content-type"] == req.headers.get("Content-Type") == "application/json"
    assert req.decoded == req.body and req.json()["batch"][0]["messageId"] == "m-1"


def test_import_is_an_alias_of_batch(emu: SegmentEmulator) -> None:
    assert post(emu, batch(track(1)), "/v1/import").status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-1"]


@pytest.mark.parametrize("route", ["track", "identify", "group", "page", "screen", "alias"])
def test_single_call_routes_imply_the_type(emu: SegmentEmulator, route: str) -> None:
    event = {"userId": "u1", "event": "Clicked", "groupId": "g1", "previousId": "p1", "messageId": "s-1"}
    assert post(emu, event, f"/v1/{route}").status_code == 200
    (accepted,) = emu.accepted
    assert accepted["type"] == route


def test_unknown_path_is_404_and_other_methods_405(emu: SegmentEmulator) -> None:
    assert post(emu, batch(track()), "/v1/nope").status_code == 404
    assert post(emu, batch(track()), "/v1/batch/").status_code == 404
    resp = requests.get(emu.url + "/v1/batch", timeout=5)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert [r.status for r in emu.requests] == [404, 404, 405] and emu.accepted == []


def test_keep_alive_session_and_messageid_assignment(emu: SegmentEmulator) -> None:
    with requests.Session() as session:
        session.auth = (KEY, "")
        for _ in range(3):
            event = {"type": "track", "event": "E", "anonymousId": "a1"}
            resp = session.post(emu.url + "/v1/batch", json=batch(event), timeout=5)
            assert resp.status_code == 200
    ids = [e["messageId"] for e in emu.accepted]
    assert len(set(ids)) == 3 and emu.duplicates == 0  # Segment assigns a fresh id to each: retries duplicate


def test_chunked_body_is_read(emu: SegmentEmulator) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"batch":[{"type":"track","event":"E","userId":"u",'
        yield b'"messageId":"c-1"}],"writeKey":"' + KEY.encode() + b'"}'

    resp = requests.post(emu.url + "/v1/batch", data=chunks(), headers={"Content-Type": "application/json"}, timeout=5)
    assert resp.status_code == 200 and emu.requests[0].headers["transfer-encoding"] == "chunked"
    assert [e["messageId"] for e in emu.accepted] == ["c-1"]


# --- auth ---


def test_body_write_key_alone_is_enough(emu: SegmentEmulator) -> None:
    assert post(emu, batch(track(), writeKey=KEY), auth=None).status_code == 200
    assert len(emu.accepted) == 1


def test_basic_header_matches_even_with_a_wrong_body_key(emu: SegmentEmulator) -> None:
    assert post(emu, batch(track(), writeKey="other")).status_code == 200
    assert len(emu.accepted) == 1


def test_wrong_key_answers_200_and_drops_as_unknown_source(emu: SegmentEmulator) -> None:
    resp = post(emu, batch(track(1), track(2), writeKey="wrong"), auth="wrong")
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert emu.accepted == []
    assert [(e["messageId"], code) for e, code in emu.discarded] == [
        ("m-1", "unknown_source"),
        ("m-2", "unknown_source"),
    ]


@pytest.mark.parametrize("credentials", [f"{KEY}:secret", KEY], ids=["password", "no-colon"])
def test_basic_credentials_must_be_key_colon_empty(emu: SegmentEmulator, credentials: str) -> None:
    header = "Basic " + base64.b64encode(credentials.encode()).decode()
    assert post(emu, batch(track()), auth=None, headers={"Authorization": header}).status_code == 200
    assert emu.accepted == [] and [code for _, code in emu.discarded] == ["unknown_source"]


@pytest.mark.parametrize(("auth", "body_key"), [(None, None), ("", None), (None, ""), ("", "")])
def test_no_key_or_empty_key_is_400(emu: SegmentEmulator, auth: str | None, body_key: str | None) -> None:
    body = batch(track()) if body_key is None else batch(track(), writeKey=body_key)
    resp = post(emu, body, auth=auth)
    assert (resp.status_code, resp.text) == (400, "Bad Request\n")
    assert emu.accepted == [] and emu.discarded == []


@pytest.mark.parametrize(("auth", "body_key"), [("abc123", None), (None, "abc123"), (KEY, "abc123")])
def test_a_key_shorter_than_the_minimum_is_400(auth: str | None, body_key: str | None) -> None:
    body = batch(track()) if body_key is None else batch(track(), writeKey=body_key)
    with SegmentEmulator(KEY, min_write_key_chars=8) as emu:
        resp = post(emu, body, auth=auth)
        assert (resp.status_code, resp.text) == (400, "Bad Request\n")
        assert emu.accepted == [] and emu.discarded == []
        assert post(emu, batch(track(), writeKey="wrong-but-long"), auth=None).status_code == 200


# --- encoding, content type, JSON ---


def test_gzip_body_is_decoded(emu: SegmentEmulator) -> None:
    assert post(emu, batch(track(1)), compress=True).status_code == 200
    (req,) = emu.requests
    assert req.body[:2] == b"\x1f\x8b" and json.loads(req.decoded)["batch"][0]["messageId"] == "m-1"
    assert len(emu.accepted) == 1


@pytest.mark.parametrize("raw", [b"not gzip at all", gzip.compress(b'{"batch":[]}')[:-6], b""])
def test_malformed_gzip_is_400_json(emu: SegmentEmulator, raw: bytes) -> None:
    resp = post(emu, raw, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 400
    assert resp.json() == {"success": False, "message": "Malformed gzip content"}
    assert emu.requests[0].decoded is None and emu.accepted == []


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("application/json; charset=utf-8", 200), ("text/plain", 400), ("application/x-www-form-urlencoded", 400)],
)
def test_content_type_must_be_json(emu: SegmentEmulator, content_type: str, status: int) -> None:
    assert post(emu, batch(track()), headers={"Content-Type": content_type}).status_code == status


@pytest.mark.parametrize(
    "raw",
    [
        b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"x":NaN}}]}',
        b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"x":-Infinity}}]}',
        b'{"batch":[',
        b'[{"type":"track"}]',
        b'{"batch":{"type":"track"}}',
        b'{"sentAt":"2026-01-01T00:00:00Z"}',
        b'{"batch":[]}\xff',
    ],
    ids=["nan", "infinity", "truncated", "top-level-array", "batch-not-list", "no-batch", "not-utf8"],
)
def test_invalid_json_or_shape_is_400(emu: SegmentEmulator, raw: bytes) -> None:
    resp = post(emu, raw)
    assert (resp.status_code, resp.text) == (400, "Bad Request\n")
    assert emu.accepted == [] and emu.discarded == []


def test_empty_batch_is_200_and_reported(emu: SegmentEmulator) -> None:
    assert post(emu, batch()).status_code == 200
    assert emu.discarded == [(None, "empty_batch")]


# --- limits ---


def test_batch_size_limit_applies_to_the_decompressed_body(emu: SegmentEmulator) -> None:
    at_limit, over_limit = padded_body(512_000), padded_body(512_001)
    assert len(gzip.compress(over_limit)) < 5_000  # small on the wire, large once inflated
    assert post(emu, at_limit, compress=True).status_code == 200
    resp = post(emu, over_limit, compress=True)
    assert (resp.status_code, resp.text) == (400, "Bad Request\n")
    assert len(emu.accepted) == 1 and emu.requests[1].decoded == over_limit


def test_body_limit_is_configurable() -> None:
    with SegmentEmulator(KEY, max_body_bytes=500_000) as emu:
        assert post(emu, padded_body(500_000)).status_code == 200
        assert post(emu, padded_body(500_001)).status_code == 400


def test_single_call_limit_is_32_kib(emu: SegmentEmulator) -> None:
    def body(size: int) -> bytes:
        base = json.dumps({"userId": "u", "event": "E", "properties": {"pad": ""}}).encode()
        return json.dumps({"userId": "u", "event": "E", "properties": {"pad": "x" * (size - len(base))}}).encode()

    assert post(emu, body(32_768), "/v1/track").status_code == 200
    assert post(emu, body(32_769), "/v1/track").status_code == 400
    assert len(emu.accepted) == 1


def test_events_past_2500_are_dropped_with_200(emu: SegmentEmulator) -> None:
    resp = post(emu, batch(*(track(i) for i in range(2_502))))
    assert resp.status_code == 200
    assert len(emu.accepted) == 2_500
    assert [(e["messageId"], code) for e, code in emu.discarded] == [
        ("m-2500", "batch_too_large"),
        ("m-2501", "batch_too_large"),
    ]


def test_event_over_32_kib_is_dropped_with_200(emu: SegmentEmulator) -> None:
    big = track(2, properties={"pad": "x" * 32_768})
    assert post(emu, batch(track(1), big, track(3))).status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-1", "m-3"]
    assert [(e["messageId"], code) for e, code in emu.discarded] == [("m-2", "event_too_large")]


# --- per-event discards ---


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"event": "E", "userId": "u"}, "invalid_type"),
        (track(type="purchase"), "invalid_type"),
        ("not an object", "invalid_type"),
        ({"type": "track", "event": "E"}, "no_user_anon_id"),
        ({"type": "track", "event": "E", "userId": None, "anonymousId": None}, "no_user_anon_id"),
        (track(userId=42), "id_not_string"),
        (track(userId=""), "id_not_string"),
        (track(userId="u", anonymousId=7), "id_not_string"),
        ({"type": "track", "userId": "u"}, "event_not_defined"),
        (track(event=""), "event_not_defined"),
        (track(event=3), "event_not_string"),
        ({"type": "group", "userId": "u"}, "id_required"),
        ({"type": "group", "userId": "u", "groupId": 9}, "id_required"),
        ({"type": "alias", "userId": "u"}, "id_required"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "id_required"),
        ({"type": "page", "userId": "u", "name": ""}, "name_not_string"),
        ({"type": "screen", "userId": "u", "category": 5}, "category_not_string"),
        (track(properties=[1, 2]), "properties_not_object"),
        ({"type": "identify", "userId": "u", "traits": "vip"}, "traits_not_object"),
        (track(messageId=123), "invalid_message_id"),
        (track(messageId="m" * 101), "invalid_message_id"),
        (track(messageId=""), "invalid_message_id"),
        (track(timestamp="2026-01-01T00:00:00"), "invalid_timestamp"),
        (track(timestamp="2026-01-01"), "invalid_timestamp"),
        (track(timestamp="2026-02-30T00:00:00Z"), "invalid_timestamp"),
        (track(timestamp="yesterday"), "invalid_timestamp"),
        (track(timestamp=1767225600), "invalid_timestamp"),
    ],
)
def test_invalid_event_is_answered_200_and_discarded(emu: SegmentEmulator, event: Any, code: str) -> None:
    assert post(emu, batch(track(0), event, track(9))).status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-0", "m-9"]
    assert emu.discarded == [(event if isinstance(event, dict) else None, code)]


@pytest.mark.parametrize(
    "event",
    [
        track(messageId="m" * 100),
        track(timestamp="2026-01-01T00:00:00.000Z"),
        track(timestamp="2026-01-01T02:00:00.123456+02:00"),
        track(timestamp="2026-01-01T00:00Z"),
        track(userId=None, anonymousId="a"),
        track(properties=None, context={"library": {"name": "x"}}),
        {"type": "page", "userId": "u", "name": "Home", "category": "Docs", "properties": {}},
        {"type": "alias", "userId": "u", "previousId": "p"},
    ],
)
def test_valid_edge_cases_are_accepted(emu: SegmentEmulator, event: dict[str, Any]) -> None:
    assert post(emu, batch(event)).status_code == 200
    assert emu.discarded == [] and len(emu.accepted) == 1


def test_event_too_large_is_reported_before_field_errors(emu: SegmentEmulator) -> None:
    post(emu, batch({"type": "bogus", "pad": "x" * 40_000}))
    assert [code for _, code in emu.discarded] == ["event_too_large"]


# --- dedup and queries ---


def test_duplicates_are_counted_across_requests(emu: SegmentEmulator) -> None:
    post(emu, batch(track(1), track(2)))
    post(emu, batch(track(2), track(3), track(3)))
    assert [e["messageId"] for e in emu.accepted] == ["m-1", "m-2", "m-2", "m-3", "m-3"]
    assert emu.duplicates == 2
    assert list(emu.unique_events()) == ["m-1", "m-2", "m-3"]
    assert emu.unique_events()["m-2"] is emu.accepted[1]


def test_events_named_returns_unique_track_events(emu: SegmentEmulator) -> None:
    post(emu, batch(track(1), track(1), track(2, event="Other"), {"type": "identify", "userId": "u", "event": "X"}))
    assert [e["messageId"] for e in emu.events_named("Row Added")] == ["m-1"]
    assert emu.events_named("X") == []


def test_reset_forgets_everything(emu: SegmentEmulator) -> None:
    post(emu, batch(track(1), {"type": "track"}))
    emu.inject(Fault(503))
    emu.reset()
    assert (emu.accepted, emu.discarded, emu.requests, emu.duplicates) == ([], [], [], 0)
    assert post(emu, batch(track(1))).status_code == 200  # the fault is gone
    assert emu.duplicates == 0  # and so are the remembered messageIds


def test_concurrent_posts_are_all_recorded(emu: SegmentEmulator) -> None:
    def send(worker: int) -> None:
        for j in range(5):
            assert post(emu, batch(track(worker * 100 + j))).status_code == 200

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(emu.unique_events()) == len(emu.accepted) == len(emu.requests) == 40


# --- faults ---


def test_fault_with_retry_after_then_normal(emu: SegmentEmulator) -> None:
    emu.inject(Fault(429, "slow down", retry_after="2", headers={"X-RateLimit-Reset": "2"}))
    resp = post(emu, batch(track(1)))
    assert (resp.status_code, resp.text) == (429, "slow down")
    assert resp.headers["Retry-After"] == "2" and resp.headers["X-RateLimit-Reset"] == "2"
    assert emu.accepted == []
    assert post(emu, batch(track(1))).status_code == 200
    assert [r.status for r in emu.requests] == [429, 200] and emu.requests[0].fault is not None
    assert len(emu.accepted) == 1 and emu.duplicates == 0


def test_faults_apply_in_order(emu: SegmentEmulator) -> None:
    emu.inject(Fault(500), Fault(502, "Bad Gateway"))
    statuses = [post(emu, batch(track(1))).status_code for _ in range(3)]
    assert statuses == [500, 502, 200]
    assert post(emu, b"{}", "/v1/unknown").status_code == 404  # unknown routes do not consume faults


def test_default_fault_is_500_something_went_wrong(emu: SegmentEmulator) -> None:
    emu.inject(Fault())
    resp = post(emu, batch(track()))
    assert (resp.status_code, resp.text) == (500, "Something went wrong")


def test_delay_trips_the_client_timeout_without_recording(emu: SegmentEmulator) -> None:
    emu.inject(Fault(delay=1.0))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(emu, batch(track(1)), timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert emu.accepted == [] and len(emu.requests) == 1


def test_delay_then_answer(emu: SegmentEmulator) -> None:
    emu.inject(Fault(503, delay=0.3))
    started = time.monotonic()
    assert post(emu, batch(track(1))).status_code == 503
    assert time.monotonic() - started >= 0.3


def test_record_first_accepts_then_fails(emu: SegmentEmulator) -> None:
    emu.inject(Fault(500, record_first=True))
    assert post(emu, batch(track(1))).status_code == 500
    assert [e["messageId"] for e in emu.accepted] == ["m-1"]
    assert post(emu, batch(track(1))).status_code == 200  # the sender's retry
    assert emu.duplicates == 1 and len(emu.unique_events()) == 1


def test_record_first_with_timeout_is_an_ambiguous_failure(emu: SegmentEmulator) -> None:
    emu.inject(Fault(200, delay=1.0, record_first=True))
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(emu, batch(track(1)), timeout=0.2)
    assert [e["messageId"] for e in emu.accepted] == ["m-1"]


def test_drop_connection_raises_connection_error(emu: SegmentEmulator) -> None:
    emu.inject(Fault(drop_connection=True))
    with pytest.raises(requests.exceptions.ConnectionError):
        post(emu, batch(track(1)))
    assert emu.accepted == [] and emu.requests[0].status is None
    assert post(emu, batch(track(1))).status_code == 200


def test_drop_connection_after_recording_on_a_keep_alive_session(emu: SegmentEmulator) -> None:
    emu.inject(Fault(record_first=True, drop_connection=True))
    with requests.Session() as session:
        session.auth = (KEY, "")
        with pytest.raises(requests.exceptions.ConnectionError):
            session.post(emu.url + "/v1/batch", json=batch(track(1)), timeout=5)
        assert session.post(emu.url + "/v1/batch", json=batch(track(1)), timeout=5).status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-1", "m-1"] and emu.duplicates == 1


def test_record_first_does_not_accept_an_invalid_body(emu: SegmentEmulator) -> None:
    emu.inject(Fault(500, record_first=True))
    assert post(emu, b"{nope").status_code == 500
    assert emu.accepted == [] and emu.discarded == []


def test_stop_wakes_delayed_answers() -> None:
    emu = SegmentEmulator(KEY).start()
    emu.inject(Fault(delay=30))
    url = emu.url
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            requests.post(url + "/v1/batch", json=batch(track()), auth=(KEY, ""), timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    while not emu.requests:
        time.sleep(0.01)
    started = time.monotonic()
    emu.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2
    with pytest.raises(RuntimeError):
        _ = emu.url


# --- speed, latency and counting (benchmarks) ---


def test_a_type_that_is_not_a_string_is_invalid_type(emu: SegmentEmulator) -> None:
    event = track(type=["track"])
    assert post(emu, batch(track(0), event)).status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-0"] and emu.discarded == [(event, "invalid_type")]


def test_counts_and_message_ids(emu: SegmentEmulator) -> None:
    post(emu, batch(track(1), track(2), {"type": "track"}))
    post(emu, batch(track(2)))
    post(emu, b"{nope")
    assert emu.counts() == {"requests": 3, "accepted": 3, "discarded": 1, "duplicates": 1}
    assert emu.message_ids() == {"m-1", "m-2"}
    emu.reset()
    assert emu.counts() == {"requests": 0, "accepted": 0, "discarded": 0, "duplicates": 0}


def test_without_recording_the_checks_and_counts_stay() -> None:
    with SegmentEmulator(KEY, record=False) as emu:
        assert post(emu, batch(track(1), track(1), track(2, userId=""), track(3)), compress=True).status_code == 200
        assert post(emu, padded_body(512_001)).status_code == 400
        assert post(emu, batch(track(4)), auth="wrong").status_code == 200
        assert (emu.accepted, emu.discarded, emu.requests) == ([], [], [])
        assert emu.counts() == {"requests": 3, "accepted": 3, "discarded": 2, "duplicates": 1}
        assert emu.message_ids() == {"m-1", "m-3"}


def test_latency_delays_every_answer() -> None:
    with SegmentEmulator(KEY, latency_seconds=0.3) as emu:
        started = time.monotonic()
        assert post(emu, batch(track(1))).status_code == 200
        assert post(emu, b"{}", "/v1/nope").status_code == 404
        assert time.monotonic() - started >= 0.6


def test_keep_alive_answers_are_not_held_back() -> None:
    with SegmentEmulator(KEY, record=False) as emu, requests.Session() as session:
        session.auth = (KEY, "")
        body = json.dumps(batch(*(track(i) for i in range(500)))).encode()
        started = time.monotonic()
        for _ in range(20):
            resp = session.post(emu.url + "/v1/batch", data=body, headers={"Content-Type": "application/json"})
            assert resp.status_code == 200
        assert time.monotonic() - started < 0.6  # with Nagle's algorithm on, each answer waited ~40 ms for an ACK


def test_two_emulators_can_share_a_port() -> None:
    with SegmentEmulator(KEY, reuse_port=True) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with SegmentEmulator(KEY, port=port, reuse_port=True) as second:
            assert second.url == first.url
            for i in range(40):  # each POST opens a new connection; the kernel spreads them over both
                assert post(first, batch(track(i))).status_code == 200
            counts = [first.counts()["accepted"], second.counts()["accepted"]]
    assert sum(counts) == 40 and min(counts) > 0


# --- gzip, sizes and numbers ---


def test_multi_member_gzip_is_one_body(emu: SegmentEmulator) -> None:
    text = json.dumps(batch(track(1), track(2))).encode()
    raw = gzip.compress(text[:20]) + gzip.compress(text[20:]) + b"\0\0"
    assert post(emu, raw, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert [e["messageId"] for e in emu.accepted] == ["m-1", "m-2"]


def test_gzip_with_a_bad_checksum_is_malformed(emu: SegmentEmulator) -> None:
    raw = bytearray(gzip.compress(json.dumps(batch(track(1))).encode()))
    raw[-8] ^= 0xFF  # the CRC-32 of the trailer
    resp = post(emu, bytes(raw), headers={"Content-Encoding": "gzip"})
    assert (resp.status_code, resp.json()["message"]) == (400, "Malformed gzip content")


def test_a_gzip_bomb_is_cut_off_and_too_large(emu: SegmentEmulator) -> None:
    bomb = gzip.compress(b'{"batch":[' + b" " * (80 << 20) + b"]}", compresslevel=9)
    assert len(bomb) < 200_000
    resp = post(emu, bomb, headers={"Content-Encoding": "gzip"}, timeout=30)
    assert (resp.status_code, resp.text) == (400, "Bad Request\n")
    assert len(emu.requests[0].decoded or b"") == 64 << 20  # inflated no further than the hard cap


def test_an_event_is_measured_as_sent(emu: SegmentEmulator) -> None:
    compact = json.dumps(track(1, properties={"pad": "x" * 32_600}), separators=(",", ":"))
    spaced = compact.replace(",", "," + " " * 100)  # the same event, spread past 32,768 bytes by whitespace
    assert len(compact) < 32_768 < len(spaced)
    assert post(emu, b'{"batch":[' + compact.encode() + b"," + spaced.encode() + b"]}").status_code == 200
    assert len(emu.accepted) == 1 and [code for _, code in emu.discarded] == ["event_too_large"]


def test_invalid_utf8_inside_an_event_is_400(emu: SegmentEmulator) -> None:
    resp = post(emu, b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"x":"\xff"}}]}')
    assert (resp.status_code, resp.text) == (400, "Bad Request\n")


def test_numbers_past_a_double_read_as_infinity(emu: SegmentEmulator) -> None:
    assert post(emu, b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"x":1e999}}]}').ok
    assert emu.accepted[0]["properties"] == {"x": float("inf")}


def test_a_null_message_id_gets_one_assigned(emu: SegmentEmulator) -> None:
    post(emu, batch(track(1, messageId=None), track(2, messageId=None)))
    ids = [e["messageId"] for e in emu.accepted]
    assert emu.duplicates == 0 and all(i.startswith("emulator-") for i in ids) and len(set(ids)) == 2


# --- events judged by their types and field by field agree ---

_EDGES = [None, "", "u", 7, True, [1], {}, {"a": 1}, "m" * 100, "m" * 101, "2026-01-01T00:00:00Z", "2026-01-01"]
_EDGES += ["2026-02-30T00:00:00Z", *sorted(SINGLE_ROUTES.values()), "bogus"]
_FIELDS = ["type", "userId", "anonymousId", "event", "groupId", "previousId", "name", "category"]
_FIELDS += ["properties", "traits", "messageId", "timestamp", "context"]
_DROP = object()  # a change that removes the field


def _valid(kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "userId": "u",
        "anonymousId": "a",
        "event": "E",
        "groupId": "g",
        "previousId": "p",
        "messageId": "m",
    }


def _assert_judged_as_field_by_field(event: Any, implied: str | None) -> None:
    emu = SegmentEmulator(KEY, record=False)
    raw = msgspec.Raw(json.dumps(event).encode())
    expected = emu._discard_reason(0, event, implied, len(raw))
    message_id = event.get("messageId") if isinstance(event, dict) else None
    assert emu._judge(0, raw, implied) == (expected, message_id if isinstance(message_id, str) else None), event


def test_every_single_change_is_judged_as_field_by_field() -> None:
    for kind in sorted(SINGLE_ROUTES.values()):
        for name in _FIELDS:
            for value in [*_EDGES, _DROP]:
                event = _valid(kind)
                if value is _DROP:
                    event.pop(name, None)
                else:
                    event[name] = value
                for implied in (None, "track", "alias"):
                    _assert_judged_as_field_by_field(event, implied)
    for value in _EDGES:
        _assert_judged_as_field_by_field(value, None)


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of some type with up to four fields changed or dropped."""
    event = _valid(draw(st.sampled_from(sorted(SINGLE_ROUTES.values()))))
    changes = draw(st.dictionaries(st.sampled_from(_FIELDS), st.sampled_from([*_EDGES, _DROP]), max_size=4))
    for name, value in changes.items():
        if value is _DROP:
            event.pop(name, None)
        else:
            event[name] = value
    return event


@settings(max_examples=500, deadline=None)
@given(event=_events(), implied=st.sampled_from([None, None, "track", "page", "alias"]))
def test_typed_events_are_judged_as_field_by_field(event: dict[str, Any], implied: str | None) -> None:
    _assert_judged_as_field_by_field(event, implied)
