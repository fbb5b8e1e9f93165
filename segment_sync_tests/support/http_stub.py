"""A small HTTP server on 127.0.0.1 for stubs of alert receivers: scripted replies, every request recorded."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """A scripted answer to the next request, instead of the normal one."""

    status: int
    body: str = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # more headers, e.g. Retry-After


@dataclass
class Request:
    """One request as received (headers in lower case), and what it was answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it was received
    reply: Reply | None = None  # the answer, scripted or not


@dataclass
class HttpStub:
    """Records each POST and answers it with the next scripted reply, else with `answer` (to override)."""

    requests: list[Request] = field(default_factory=list)
    _replies: collections.deque[Reply] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        if self._server is None:
            raise RuntimeError("the stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._replies.extend(replies)

    def answer(self, request: Request) -> tuple[int, str]:
        """Status and JSON body for a request that is not scripted."""
        return 200, "{}"

    def start(self) -> HttpStub:
        """Listen on a free port of 127.0.0.1."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HttpStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _receive(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._replies.popleft() if self._replies else Reply(*self.answer(request))
            request.status, request.reply = reply.status, reply
        return reply


def _handler(stub: HttpStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            reply = stub._receive(request)
            data = reply.body.encode()
            self.send_response(reply.status)
            for name, value in {"Content-Type": reply.content_type, **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            """Keep test output quiet."""

    return Handler
