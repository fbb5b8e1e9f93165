"""A strict emulator of Segment's HTTP Tracking API over real HTTP on 127.0.0.1 (see segment_api.md §1-4, §7).

A batch is parsed once with its events left as raw JSON (msgspec): an event's size is its bytes as sent, and
an event whose fields have the expected types is judged without building its dicts; any other event is
read whole and judged field by field. JSON numbers beyond a double's range are read as infinities.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import datetime as dt
import json
import re
import socket
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from isal import isal_zlib

BATCH_ROUTES = frozenset({"/v1/batch", "/v1/import"})
SINGLE_ROUTES = {f"/v1/{t}": t for t in ("track", "identify", "group", "page", "screen", "alias")}
EVENT_TYPES = frozenset(SINGLE_ROUTES.values())
BAD_REQUEST = "Bad Request\n"
MALFORMED_GZIP = '{"success":false,"message":"Malformed gzip content"}'
SUCCESS = '{"success":true}'
MAX_MESSAGE_ID_CHARS = 100
HARD_DECODED_CAP = 64 << 20  # never inflate more than this, whatever the configured limits
_ISO_WITH_ZONE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})")
_JSON_NULL = msgspec.Raw(b"null")


class _BatchBody(msgspec.Struct, rename="camel"):
    """A batch request's body, its events left as raw JSON."""

    batch: list[msgspec.Raw]
    write_key: Any = None


class _TypedEvent(msgspec.Struct, rename="camel"):
    """The fields Segment checks, when each has the type it expects (the others are ignored)."""

    type: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    name: str | None = None
    category: str | None = None
    properties: msgspec.Raw = _JSON_NULL
    traits: msgspec.Raw = _JSON_NULL
    message_id: str | None = None
    timestamp: str | None = None


_TYPED_EVENT = msgspec.json.Decoder(_TypedEvent)
_BATCH_BODY = msgspec.json.Decoder(_BatchBody)
_ANY_JSON = msgspec.json.Decoder(float_hook=float)  # so 1e999 reads as inf rather than failing


@dataclass
class Fault:
    """One failure to answer the next POST with, instead of (or after) normal processing."""

    status: int = 500
    body: str = "Something went wrong"
    retry_after: str | None = None
    delay: float = 0.0
    record_first: bool = False
    drop_connection: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. X-RateLimit-Reset


class Headers(dict):
    """A plain dict of request headers whose lookups ignore case."""

    def _key(self, key: object) -> object:
        if isinstance(key, str) and not super().__contains__(key):
            for k in self:
                if k.lower() == key.lower():
                    return k
        return key

    def __getitem__(self, key: object) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: object, default: Any = None) -> Any:
        """Value of a header, any case."""
        return super().get(self._key(key), default)


@dataclass
class RecordedRequest:
    """One HTTP request as received; `status` is None while unanswered or when the connection was dropped."""

    method: str
    path: str
    headers: Headers
    body: bytes
    decoded: bytes | None = None
    status: int | None = None
    fault: Fault | None = None
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        """The decoded body parsed as JSON."""
        if self.decoded is None:
            raise ValueError("the body could not be decoded")
        return json.loads(self.decoded)


@dataclass
class _Answer:
    status: int
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class _BadRequest(Exception):
    def __init__(self, answer: _Answer):
        super().__init__(answer.body)
        self.answer = answer


class SegmentEmulator:
    """Segment's Tracking API on a local port: validates like Segment, records what it would keep or drop."""

    def __init__(
        self,
        write_key: str = "test-write-key",
        *,
        max_body_bytes: int = 512_000,
        max_event_bytes: int = 32_768,
        max_batch_events: int = 2_500,
        min_write_key_chars: int = 0,
        latency_seconds: float = 0.0,
        record: bool = True,
        port: int = 0,
        reuse_port: bool = False,
    ):
        self.write_key = write_key
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_batch_events = max_batch_events
        # Segment answers 400 to some very short keys ("abc123", segment_api.md §2); where it draws the line is unknown.
        self.min_write_key_chars = min_write_key_chars
        self.latency_seconds = latency_seconds  # added to every answer, like the round trip to Segment
        self.record = record  # False keeps only counts and messageIds (benchmarks), with the same checks
        self.port, self.reuse_port = port, reuse_port  # reuse_port: several processes share one port
        self.accepted: list[dict] = []
        self.discarded: list[tuple[dict | None, str]] = []
        self.requests: list[RecordedRequest] = []
        self._faults: collections.deque[Fault] = collections.deque()
        self._seen_ids: set[str] = set()
        self._duplicates = 0
        self._counts = collections.Counter[str]()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash or /v1."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SegmentEmulator:
        """Listen on 127.0.0.1, on `port` or else a free one."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", self.port), _Handler, reuse_port=self.reuse_port)
            self._server.emulator = self
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, wake delayed answers and close open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SegmentEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each applies to the next POST to a known route, in order."""
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget recorded events, requests, remembered messageIds and queued faults."""
        with self._lock:
            self.accepted.clear()
            self.discarded.clear()
            self.requests.clear()
            self._faults.clear()
            self._seen_ids.clear()
            self._duplicates = 0
            self._counts.clear()

    @property
    def duplicates(self) -> int:
        """Accepted events whose messageId had already been accepted before."""
        with self._lock:
            return self._duplicates

    def counts(self) -> dict[str, int]:
        """Requests, accepted and discarded events and duplicates since the start or the last reset."""
        with self._lock:
            return {
                "requests": self._counts["requests"],
                "accepted": self._counts["accepted"],
                "discarded": self._counts["discarded"],
                "duplicates": self._duplicates,
            }

    def message_ids(self) -> set[str]:
        """The distinct messageIds accepted since the start or the last reset."""
        with self._lock:
            return set(self._seen_ids)

    def unique_events(self) -> dict[str, dict]:
        """messageId -> first accepted event with it."""
        out: dict[str, dict] = {}
        with self._lock:
            for event in self.accepted:
                out.setdefault(event["messageId"], event)
        return out

    def events_named(self, name: str) -> list[dict]:
        """Unique accepted track events with this `event` name."""
        return [e for e in self.unique_events().values() if e.get("type") == "track" and e.get("event") == name]

    # --- request handling (called from the server's threads) ---

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._counts["requests"] += 1
            if self.record:
                self.requests.append(request)

    def _process(self, route: str, request: RecordedRequest) -> _Answer:
        """Validate a POST to a known route like Segment does and record its events; return the answer."""
        try:
            events, authorized = self._parse(route, request)
        except _BadRequest as exc:
            return exc.answer
        implied = SINGLE_ROUTES.get(route)
        if authorized:
            judged = [self._judge(i, raw, implied) for i, raw in enumerate(events)]
        else:
            judged = [("unknown_source", None)] * len(events)
        kept = [
            (raw, mid or f"emulator-{uuid.uuid4()}")  # a missing messageId is assigned one, as Segment does
            for raw, (why, mid) in zip(events, judged, strict=True)
            if why is None
        ]
        ids = [mid for _, mid in kept]
        received_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            if not events:
                self._discard(None, "empty_batch" if authorized else "unknown_source")
            self._counts["discarded"] += len(events) - len(kept)
            self._counts["accepted"] += len(kept)
            seen, known = self._seen_ids, len(self._seen_ids)
            seen.update(ids)
            self._duplicates += len(ids) - (len(seen) - known)
            if self.record:
                for raw, (reason, _) in zip(events, judged, strict=True):
                    if reason is not None:
                        event = _ANY_JSON.decode(raw)
                        self.discarded.append((event if isinstance(event, dict) else None, reason))
                for raw, message_id in kept:
                    event = _ANY_JSON.decode(raw)
                    if implied is not None:
                        event["type"] = implied  # the path implies the type
                    event |= {"messageId": message_id, "receivedAt": received_at}
                    self.accepted.append(event)
        return _Answer(200, SUCCESS, "application/json")

    def _discard(self, event: dict | None, reason: str) -> None:
        self._counts["discarded"] += 1
        if self.record:
            self.discarded.append((event, reason))

    def _parse(self, route: str, request: RecordedRequest) -> tuple[list[msgspec.Raw], bool]:
        """The raw events of a request and whether its write key is the configured one; raises _BadRequest."""
        bad = _Answer(400, BAD_REQUEST)
        media_type, _, params = request.headers.get("Content-Type", "").partition(";")
        charset = params.strip().lower().replace(" ", "")
        if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
            raise _BadRequest(bad)
        decoded = request.decoded
        if decoded is None:
            raise _BadRequest(_Answer(400, MALFORMED_GZIP, "application/json"))
        limit = self.max_body_bytes if route in BATCH_ROUTES else self.max_event_bytes
        if len(decoded) > limit:
            raise _BadRequest(bad)
        try:
            decoded.decode("utf-8")  # raw events are not decoded, so their text is checked here
            if route in BATCH_ROUTES:
                body = _BATCH_BODY.decode(decoded)  # strict: no NaN/Infinity literals, an object with a list
                events, body_key = body.batch, body.write_key
            else:
                single = _ANY_JSON.decode(decoded)
                if not isinstance(single, dict):
                    raise _BadRequest(bad)
                events, body_key = [msgspec.Raw(decoded.strip())], single.get("writeKey")
        except (UnicodeDecodeError, msgspec.DecodeError):
            raise _BadRequest(bad) from None
        presented = (_basic_auth_key(request.headers.get("Authorization")), body_key)
        keys = [k for k in presented if isinstance(k, str) and k]
        if not keys or any(len(k) < self.min_write_key_chars for k in keys):
            raise _BadRequest(bad)  # no key, only empty ones, or a malformed one
        return events, self.write_key in keys

    def _judge(self, index: int, raw: msgspec.Raw, implied_type: str | None) -> tuple[str | None, str | None]:
        """The discard code of an event (None when kept) and its messageId (None when it has none)."""
        if index >= self.max_batch_events:
            return "batch_too_large", None
        if len(raw) <= self.max_event_bytes:
            try:
                event = _TYPED_EVENT.decode(raw)
            except msgspec.DecodeError:
                pass  # a field of another type (or not an object at all): judged field by field below
            else:
                return _typed_discard_reason(event, implied_type), event.message_id
        whole = _ANY_JSON.decode(raw)
        reason = self._discard_reason(index, whole, implied_type, len(raw))
        message_id = whole.get("messageId") if isinstance(whole, dict) else None
        return reason, message_id if isinstance(message_id, str) else None

    def _discard_reason(self, index: int, event: Any, implied_type: str | None, size: int) -> str | None:
        """The Delivery Overview code Segment would drop an event of `size` bytes with, or None when it keeps it.

        Each check is the same as in segment_api.md §3; `_typed_discard_reason` repeats them for typed events.
        """
        if index >= self.max_batch_events:
            return "batch_too_large"
        if not isinstance(event, dict):
            return "invalid_type"
        if size > self.max_event_bytes:
            return "event_too_large"
        get = event.get
        kind = implied_type or get("type")
        if not isinstance(kind, str) or kind not in EVENT_TYPES:
            return "invalid_type"
        user_id, anonymous_id = get("userId"), get("anonymousId")
        if (user_id is not None and not _non_empty_str(user_id)) or (
            anonymous_id is not None and not _non_empty_str(anonymous_id)
        ):
            return "id_not_string"
        if user_id is None and anonymous_id is None:
            return "no_user_anon_id"
        if kind == "track":
            name = get("event")
            if name is not None and not isinstance(name, str):
                return "event_not_string"
            if not name:
                return "event_not_defined"
        elif kind == "group":
            if not _non_empty_str(get("groupId")):
                return "id_required"
        elif kind == "alias":
            if not (_non_empty_str(get("previousId")) and _non_empty_str(user_id)):
                return "id_required"
        elif kind in ("page", "screen"):
            for name in ("name", "category"):
                if get(name) is not None and not _non_empty_str(event[name]):
                    return f"{name}_not_string"
        properties, traits = get("properties"), get("traits")
        if properties is not None and not isinstance(properties, dict):
            return "properties_not_object"
        if traits is not None and not isinstance(traits, dict):
            return "traits_not_object"
        message_id = get("messageId")
        if message_id is not None and not (_non_empty_str(message_id) and len(message_id) <= MAX_MESSAGE_ID_CHARS):
            return "invalid_message_id"
        timestamp = get("timestamp")
        if timestamp is not None and not _is_iso_with_zone(timestamp):
            return "invalid_timestamp"
        return None


def _typed_discard_reason(event: _TypedEvent, implied_type: str | None) -> str | None:
    """`_discard_reason` for an event of at most the size limit whose checked fields have the types expected."""
    kind = implied_type or event.type
    if kind not in EVENT_TYPES:
        return "invalid_type"
    user_id, anonymous_id = event.user_id, event.anonymous_id
    if user_id == "" or anonymous_id == "":
        return "id_not_string"
    if user_id is None and anonymous_id is None:
        return "no_user_anon_id"
    if kind == "track":
        if not event.event:
            return "event_not_defined"
    elif kind == "group":
        if not event.group_id:
            return "id_required"
    elif kind == "alias":
        if not (event.previous_id and user_id):
            return "id_required"
    elif kind in ("page", "screen"):
        if event.name == "":
            return "name_not_string"
        if event.category == "":
            return "category_not_string"
    if not _object_or_null(event.properties):
        return "properties_not_object"
    if not _object_or_null(event.traits):
        return "traits_not_object"
    message_id = event.message_id
    if message_id is not None and not (message_id and len(message_id) <= MAX_MESSAGE_ID_CHARS):
        return "invalid_message_id"
    timestamp = event.timestamp
    if timestamp is not None and not _is_iso_with_zone(timestamp):
        return "invalid_timestamp"
    return None


def _object_or_null(raw: msgspec.Raw) -> bool:
    """Whether raw JSON is an object or null (raw values start at their first character)."""
    return raw is _JSON_NULL or memoryview(raw)[:1] == b"{" or raw == _JSON_NULL


def _non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_iso_with_zone(value: Any) -> bool:
    if not isinstance(value, str) or not _ISO_WITH_ZONE.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _basic_auth_key(header: str | None) -> str | None:
    """The write key of a Basic header "base64(key:)"; a non-empty password or no colon is a wrong key."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not colon or password:
        return "\0invalid-basic-credentials"  # a key, but never the configured one
    return user


def _gunzip(data: bytes) -> bytes | None:
    """Inflate a (possibly multi-member) gzip stream; None when it is malformed or truncated.

    ISA-L inflates about 3x faster than zlib, with zlib's interface and checks.
    """
    out, rest = [], data
    try:
        while True:
            inflater = isal_zlib.decompressobj(wbits=31)
            out.append(inflater.decompress(rest, HARD_DECODED_CAP))
            if inflater.unconsumed_tail:
                return b"".join(out)  # a bomb: past every limit, so it gets 400 "Bad Request"
            if not inflater.eof:
                return None
            rest = inflater.unused_data
            if not rest.strip(b"\0"):
                return b"".join(out)
    except (isal_zlib.error, zlib.error):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under concurrent clients (1 s retransmits)
    emulator: SegmentEmulator

    def __init__(self, *args: Any, reuse_port: bool = False, **kwargs: Any):
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.allow_reuse_port = reuse_port  # several processes on one port, the kernel spreads connections
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients that time out or hang up are expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    server_version = "segment-emulator"
    timeout = 30
    disable_nagle_algorithm = True  # else the body, written after the headers, waits ~40 ms for a delayed ACK
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def _handle(self) -> None:
        emulator = self.server.emulator
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(_Answer(400, BAD_REQUEST))
            return
        request = RecordedRequest(self.command, self.path, Headers(self.headers.items()), raw)
        emulator._record_request(request)
        if path not in BATCH_ROUTES and path not in SINGLE_ROUTES:
            answer: _Answer | None = _Answer(404, "404 page not found\n")
        elif self.command != "POST":
            answer = _Answer(405, "Method Not Allowed\n", headers={"Allow": "POST"})
        else:
            answer = self._post(emulator, path, request)
        if answer is None:
            self._drop()
            return
        request.status = answer.status
        if emulator.latency_seconds > 0:
            emulator._stopping.wait(emulator.latency_seconds)
        self._send(answer)

    def _post(self, emulator: SegmentEmulator, path: str, request: RecordedRequest) -> _Answer | None:
        """The answer to a POST on a known route, after the next queued fault if any; None drops the connection."""
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        request.decoded = _gunzip(request.body) if encoding == "gzip" else request.body
        request.fault = fault = emulator._next_fault()
        if fault is None:
            return emulator._process(path, request)
        if fault.record_first:
            emulator._process(path, request)
        if fault.delay > 0:
            emulator._stopping.wait(fault.delay)
        if fault.drop_connection:
            return None
        content_type = "application/json" if fault.body.lstrip().startswith("{") else "text/plain; charset=utf-8"
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        return _Answer(fault.status, fault.body, content_type, headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) != length:
            raise ValueError("body shorter than Content-Length")
        return body

    def _send(self, answer: _Answer) -> None:
        payload = answer.body.encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client gave up (e.g. its timeout fired during a delay)

    def _drop(self) -> None:
        """Close the socket without writing any response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
