"""Where request bodies go: Segment's batch endpoint over HTTP (requests), or a local outbox."""

from __future__ import annotations

import email.utils
import gzip
import math
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from segment_sync import __version__

if TYPE_CHECKING:
    import requests

DEFAULT_ENDPOINT = "https://api.segment.io"
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_GZIP_LEVEL = 1  # level 6 costs about 8x the CPU for bodies only about 1.04x smaller (benchmarks/send_bench.py)
ISAL_LEVELS = range(1, 4)  # gzip by ISA-L (igzip): at level 1 about 4x faster than zlib's and 10% smaller


@dataclass(frozen=True)
class Response:
    """A transport's answer to one POST."""

    status: int
    text: str = ""
    retry_after: float | None = None


class Transport(Protocol):
    """Somewhere request bodies go: Segment over HTTP, or a local outbox.

    `deliver` sends up to the transport's `max_in_flight` bodies at once (1 when it has no such attribute),
    so a transport with more than 1 must accept `post` from several threads.
    """

    write_key: str | None

    def post(self, body: bytes, attempt: int) -> Response:
        """Send one body; raise OSError when nothing was answered."""
        ...


class SegmentHttp:
    """POSTs to Segment's `/v1/batch` with Basic auth and the write key in the body, several at a time.

    Each request in flight has a requests `Session` of its own, kept with its open connection for the next
    request. Proxies and the CA bundle come from the environment as requests reads them (HTTPS_PROXY,
    NO_PROXY, REQUESTS_CA_BUNDLE, ...), once per session rather than on every request. Bodies are gzipped by
    ISA-L (igzip) at `gzip_level` 1 to 3, by zlib at 4 to 9.
    """

    def __init__(
        self,
        write_key: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 30.0,
        gzip_body: bool = True,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ):
        if not write_key:
            raise ValueError("the Segment write key is empty; set SEGMENT_WRITE_KEY or use the outbox destination")
        check_gzip_level(gzip_level)
        check_max_in_flight(max_in_flight)
        self.write_key = write_key
        self.url = endpoint.rstrip("/").removesuffix("/v1") + "/v1/batch"
        self.timeout = timeout
        self.gzip_body = gzip_body
        self.gzip_level = gzip_level
        self.max_in_flight = max_in_flight
        parts = urlsplit(self.url)
        self.where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"  # no user info
        self._idle: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()

    def new_session(self) -> requests.Session:
        """A session for one request in flight: Segment's auth and headers, the environment's route, no retries."""
        import requests  # imported when first sending: loading the definitions needs no HTTP
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        route = session.merge_environment_settings(self.url, {}, None, None, None)
        session.trust_env = False  # the environment was read once, just above
        session.proxies.update(route["proxies"])
        session.verify = route["verify"]
        session.auth = (self.write_key, "")
        session.headers.update({"Content-Type": "application/json", "User-Agent": f"segment-sync/{__version__}"})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)  # deliver() retries
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def compress(self, body: bytes) -> bytes:
        """The gzip stream of a body at this client's level."""
        if self.gzip_level in ISAL_LEVELS:
            from isal import igzip  # imported when first sending, not with the definitions

            return igzip.compress(body, compresslevel=self.gzip_level)
        return gzip.compress(body, compresslevel=self.gzip_level)

    def post(self, body: bytes, attempt: int) -> Response:
        """POST one batch body; safe to call from several threads. Errors are OSErrors naming the host, not the key."""
        import requests

        headers = {"X-Retry-Count": str(attempt - 1)} if attempt > 1 else {}
        if self.gzip_body:
            body = self.compress(body)
            headers["Content-Encoding"] = "gzip"
        try:
            session = self._idle.get_nowait()
        except queue.Empty:
            session = self.new_session()
        try:
            answer = session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.Timeout as exc:
            raise TimeoutError(f"POST to {self.where} timed out (timeout {self.timeout:g} s)") from exc
        except requests.RequestException as exc:
            cause = _innermost(exc)
            raise ConnectionError(f"POST to {self.where} failed: {type(cause).__name__}: {cause}") from exc
        finally:
            self._idle.put(session)
        text = answer.text.replace(self.write_key, "<write key>")  # in case a proxy echoes the request
        return Response(answer.status_code, text[:500], _retry_after(answer.headers))

    def close(self) -> None:
        """Close the idle sessions' connections."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __repr__(self) -> str:  # never show the write key
        return f"SegmentHttp(url={self.url!r})"


def check_gzip_level(level: int) -> None:
    """Refuse a gzip level outside 1-9."""
    if not 1 <= level <= 9:
        raise ValueError(f"gzip_level is {level}; use 1 (fastest) to 9 (smallest)")


def check_max_in_flight(limit: int) -> None:
    """Refuse fewer than one request in flight."""
    if limit < 1:
        raise ValueError(f"max_in_flight is {limit}; use 1 (one request at a time) or more")


class Outbox:
    """Appends each request body as one JSON line to a local file instead of sending it."""

    write_key = None
    max_in_flight = 1  # lines stay in the order of the batches

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def post(self, body: bytes, attempt: int) -> Response:
        """Write one batch body durably."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(body + b"\n")
                f.flush()
                os.fsync(f.fileno())
        return Response(200, '{"success":true}')


def _innermost(exc: BaseException) -> BaseException:
    """The failure underneath requests' and urllib3's wrappers, e.g. the refused connection or the closed socket."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        if inner is None or inner is exc:
            return exc
        exc = inner


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After, else X-RateLimit-Reset: a number of seconds or an HTTP date."""
    for name in ("retry-after", "x-ratelimit-reset"):
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
