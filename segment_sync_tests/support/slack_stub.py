"""A local stub of Slack's Web API (`chat.postMessage`) over real HTTP on 127.0.0.1, for slack-sdk's base_url."""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class Reply:
    """A scripted answer to the next request, instead of the normal one."""

    status: int = 200
    error: str | None = None  # answered as {"ok": false, "error": ...}
    retry_after: str | None = None
    body: str | None = None  # a raw body, e.g. an HTML error page


@dataclass
class Post:
    """One request as received, and the status it was answered with."""

    path: str
    authorization: str | None
    body: dict[str, Any]
    status: int = 0
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class SlackStub:
    """Slack's chat.postMessage: checks the bot token and the channel, records every request and accepted message."""

    token: str = "xoxb-stub-token"
    channels: tuple[str, ...] = ("#sync-alerts",)
    requests: list[Post] = field(default_factory=list)
    _replies: collections.deque[Reply] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The base URL to give slack-sdk (it ends with /api/)."""
        if self._server is None:
            raise RuntimeError("the Slack stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies of the messages Slack would have posted."""
        with self._lock:
            return [p.body for p in self.requests if p.status == 200 and p.error is None]

    def texts(self) -> list[str]:
        """The text of each posted message."""
        return [m["text"] for m in self.messages]

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._replies.extend(replies)

    def start(self) -> SlackStub:
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

    def __enter__(self) -> SlackStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, post: Post) -> tuple[int, dict[str, str], str]:
        """Status, headers and body for one request, scripted or as Slack would answer."""
        with self._lock:
            self.requests.append(post)
            reply = self._replies.popleft() if self._replies else None
        if reply is not None:
            return self._scripted(post, reply)
        if post.path != "/api/chat.postMessage":
            post.error = "unknown_method"
        elif not post.authorization:
            post.error = "not_authed"
        elif post.authorization != f"Bearer {self.token}":
            post.error = "invalid_auth"
        elif post.body.get("channel") not in self.channels:
            post.error = "channel_not_found"
        elif not post.body.get("text"):
            post.error = "no_text"
        post.status = 404 if post.error == "unknown_method" else 200
        body = {"ok": False, "error": post.error} if post.error else {"ok": True, "channel": "C0ALERTS", "ts": "1.0"}
        return post.status, {"Content-Type": "application/json"}, json.dumps(body)

    def _scripted(self, post: Post, reply: Reply) -> tuple[int, dict[str, str], str]:
        post.status = reply.status
        post.error = reply.error or f"scripted HTTP {reply.status}"
        headers = {"Content-Type": "application/json" if reply.body is None else "text/html"}
        if reply.retry_after is not None:
            headers["Retry-After"] = reply.retry_after
        body = reply.body if reply.body is not None else json.dumps({"ok": False, "error": reply.error})
        return reply.status, headers, body


def _handler(stub: SlackStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if (self.headers.get("Content-Type") or "").startswith("application/json"):
                body = json.loads(raw or "{}")
            else:
                body = dict(parse_qsl(raw))
            post = Post(self.path.split("?")[0], self.headers.get("Authorization"), body)
            status, headers, text = stub.answer(post)
            data = text.encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            """Keep test output quiet."""

    return Handler
