"""Keep-alive HTTP connections to Segment: a socket of our own when direct, a requests session through a proxy.

requests still decides the route from the environment, as it always did: proxies (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY) and the CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's). Without a proxy, a direct
connection sends the request head requests would send, with urllib3's TLS settings, and reads the answer as
http.client would (`http1`), for about a sixth of requests' CPU per request. requests and urllib3 are
imported when a run first connects, not with the definitions.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlsplit

from segment_sync.segment_api.http1 import decoded, read_answer, text

if TYPE_CHECKING:
    import ssl

ACCEPT_ENCODING = "gzip, deflate"  # requests' value without brotli or zstandard installed; both are decoded here


@dataclass(frozen=True)
class Answer:
    """A server's answer to one POST: status, body text and headers (names in lower case)."""

    status: int
    text: str
    headers: Mapping[str, str]


class Connection(Protocol):
    """One connection to the endpoint at a time, reopened when needed; used by one thread at a time."""

    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Send one JSON body with these extra headers; raise OSError when nothing was answered."""
        ...

    def close(self) -> None:
        """Close the connection; the next post opens a new one."""
        ...


@dataclass(frozen=True)
class Route:
    """How requests reaches a URL from this environment: its proxies, and `verify` (True or a CA bundle path)."""

    url: str
    proxies: Mapping[str, str]
    verify: bool | str
    direct: bool  # no proxy applies and the URL is plain (see `_plain`), so a socket of our own can post

    @classmethod
    def from_environment(cls, url: str) -> Route:
        """Read the proxies and CA bundle as a requests session does before each request."""
        import requests

        settings = requests.Session().merge_environment_settings(url, {}, None, None, None)
        proxies = settings["proxies"]
        return cls(url, proxies, settings["verify"], _plain(url) and requests.utils.select_proxy(url, proxies) is None)


class Connector:
    """Makes connections to one URL with Segment's auth and headers; reads the environment on the first one."""

    def __init__(self, url: str, write_key: str, user_agent: str, timeout: float):
        self.url, self.timeout = url, timeout
        self._write_key, self._user_agent = write_key, user_agent
        self._route: Route | None = None
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    @property
    def route(self) -> Route:
        """The route, read from the environment once."""
        with self._lock:
            if self._route is None:
                self._route = Route.from_environment(self.url)
            return self._route

    def connect(self) -> Connection:
        """A new connection along the route (not opened until its first post)."""
        route = self.route
        if not route.direct:
            return ProxiedConnection(route, self._write_key, self._user_agent, self.timeout)
        head = [
            ("User-Agent", self._user_agent),
            ("Accept-Encoding", ACCEPT_ENCODING),
            ("Accept", "*/*"),
            ("Connection", "keep-alive"),
            ("Content-Type", "application/json"),
        ]
        return DirectConnection(self.url, head, basic_auth(self._write_key), self.timeout, self._tls_for(route))

    def _tls_for(self, route: Route) -> ssl.SSLContext | None:
        if urlsplit(route.url).scheme != "https":
            return None
        with self._lock:
            if self._tls is None:
                self._tls = tls_context(route.verify)
            return self._tls


def _plain(url: str) -> bool:
    """Whether a URL is http or https with a host, and a path and query to send as they are (requests would quote)."""
    parts = urlsplit(url)
    target = parts.path + parts.query
    plain_target = target.isascii() and target.isprintable() and " " not in target
    return parts.scheme in ("http", "https") and bool(parts.hostname) and plain_target


def basic_auth(write_key: str) -> str:
    """The Authorization header of a write key: Basic, the key as user name, no password (as requests writes it)."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode("latin1")).decode("ascii")


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """TLS as requests sets it up: urllib3's context, checking certificates against `verify`'s CA bundle."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    from urllib3.util import create_urllib3_context

    location = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    if not isinstance(location, str) or not os.path.exists(location):
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
    context = create_urllib3_context()
    if os.path.isdir(location):
        context.load_verify_locations(capath=location)
    else:
        context.load_verify_locations(cafile=location)
    context.set_alpn_protocols(["http/1.1"])
    return context


class DirectConnection:
    """A keep-alive HTTP/1.1 connection over a socket of its own (TLS for https), with requests' request head."""

    def __init__(
        self, url: str, head: list[tuple[str, str]], authorization: str, timeout: float, tls: ssl.SSLContext | None
    ):
        parts = urlsplit(url)
        self.host, self.timeout, self.tls = parts.hostname or "", timeout, tls
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.where = f"{self.host}:{self.port}"  # for errors: never the URL's user info
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {_host_field(self.host, self.port, parts.scheme)}"]
        self._start = "".join(f"{line}\r\n" for line in [*lines, *(f"{n}: {v}" for n, v in head)])
        self._end = f"Authorization: {authorization}\r\n\r\n"
        self._link: tuple[socket.socket, BinaryIO] | None = None  # the socket, and the reader of its answers

    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST one body; errors come out as OSErrors that name the host, never a header."""
        try:
            return self._post(body, headers)
        except TimeoutError as exc:
            self.close()
            raise TimeoutError(f"POST to {self.where} timed out (timeout {self.timeout:g} s)") from exc
        except (OSError, zlib.error) as exc:
            self.close()
            raise ConnectionError(f"POST to {self.where} failed: {type(exc).__name__}: {exc}") from exc

    def _post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        if self._link is None or _readable(self._link[0]):  # readable while idle: the server closed it (as urllib3)
            self.close()
            self._link = self._connect()
        sock, reader = self._link
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"{self._start}{extra}Content-Length: {len(body)}\r\n{self._end}"
        sock.sendall(head.encode("latin-1") + body)
        answer = read_answer(reader)
        if not answer.keep_open:
            self.close()
        data = decoded(answer.body, answer.fields.get("content-encoding"))
        return Answer(answer.status, text(data, answer.fields.get("content-type")), answer.fields)

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        sock = socket.create_connection((self.host, self.port), self.timeout)  # the timeout covers every read too
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock, sock.makefile("rb")

    def close(self) -> None:
        """Close the socket; the next post reconnects."""
        if self._link is not None:
            sock, reader = self._link
            self._link = None
            reader.close()
            sock.close()


def _host_field(host: str, port: int, scheme: str) -> str:
    """The Host header as http.client and urllib3 write it: IPv6 in brackets, the port unless the scheme's own."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class ProxiedConnection:
    """A requests session through the environment's proxy: CONNECT tunnels, proxy auth, HTTPS and SOCKS proxies."""

    def __init__(self, route: Route, write_key: str, user_agent: str, timeout: float):
        import requests

        self.url, self.timeout = route.url, timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the environment was read once, into the route
        self.session.proxies.update(route.proxies)
        self.session.verify = route.verify
        self.session.auth = (write_key, "")
        self.session.headers.update({"Content-Type": "application/json", "User-Agent": user_agent})

    def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST one body (requests' errors are OSErrors)."""
        resp = self.session.post(self.url, data=body, headers=dict(headers), timeout=self.timeout)
        return Answer(resp.status_code, resp.text, {name.lower(): value for name, value in resp.headers.items()})

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read, which on a keep-alive connection means the server closed it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
