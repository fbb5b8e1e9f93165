"""A local stub of Slack's Web API (`chat.postMessage`) over real HTTP on 127.0.0.1, for slack-sdk's base_url.

It is served by http_stub's server, which records every request and its answer; Slack's view of a request (its
method, token, form or JSON body and error) is read from that record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from segment_sync_tests.support import http_stub


@dataclass
class Reply:
    """A scripted answer to the next request, instead of the normal one."""

    status: int = 200
    error: str | None = None  # answered as {"ok": false, "error": ...}
    retry_after: str | None = None
    body: str | None = None  # a raw body, e.g. an HTML error page

    def http(self) -> http_stub.Reply:
        """The answer as the server sends it."""
        headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
        if self.body is not None:
            return http_stub.Reply(self.status, self.body, "text/html", headers)
        return http_stub.Reply(self.status, json.dumps({"ok": False, "error": self.error}), headers=headers)


@dataclass
class Post:
    """One request as received, and the status it was answered with."""

    path: str
    authorization: str | None
    body: dict[str, Any]
    status: int = 0
    error: str | None = None
    at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, request: http_stub.Request) -> Post:
        """A request as Slack reads it, with the error code of its answer (None for an answer that is ok)."""
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(request.body or b"{}")
        else:
            body = dict(parse_qsl(request.body.decode()))
        error = None
        if request.reply is not None:  # None while it is being answered
            try:
                answer = json.loads(request.reply.body)
            except ValueError:
                answer = {}  # a raw body, scripted
            error = None if answer.get("ok") else answer.get("error") or f"scripted HTTP {request.status}"
        path, authorization = request.path.split("?")[0], request.headers.get("authorization")
        return cls(path, authorization, body, request.status, error, request.at)


@dataclass
class SlackStub:
    """Slack's chat.postMessage: checks the bot token and the channel, records every request and accepted message."""

    token: str = "xoxb-stub-token"
    channels: tuple[str, ...] = ("#sync-alerts",)
    _server: _Server = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._server = _Server(slack=self)

    @property
    def url(self) -> str:
        """The base URL to give slack-sdk (it ends with /api/)."""
        return self._server.url + "/api/"

    @property
    def requests(self) -> list[Post]:
        """Every request, in order."""
        return [Post.of(r) for r in list(self._server.requests)]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies of the messages Slack would have posted."""
        return [p.body for p in self.requests if p.status == 200 and p.error is None]

    def texts(self) -> list[str]:
        """The text of each posted message."""
        return [m["text"] for m in self.messages]

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        self._server.script(*(r.http() for r in replies))

    def start(self) -> SlackStub:
        """Listen on a free port of 127.0.0.1."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._server.stop()

    def __enter__(self) -> SlackStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, post: Post) -> tuple[int, str]:
        """Status and JSON body for a request that is not scripted, as Slack would answer it."""
        error = None
        if post.path != "/api/chat.postMessage":
            error = "unknown_method"
        elif not post.authorization:
            error = "not_authed"
        elif post.authorization != f"Bearer {self.token}":
            error = "invalid_auth"
        elif post.body.get("channel") not in self.channels:
            error = "channel_not_found"
        elif not post.body.get("text"):
            error = "no_text"
        body = {"ok": False, "error": error} if error else {"ok": True, "channel": "C0ALERTS", "ts": "1.0"}
        return 404 if error == "unknown_method" else 200, json.dumps(body)


@dataclass
class _Server(http_stub.HttpStub):
    """http_stub's server, answering what is not scripted as the Slack stub says."""

    slack: SlackStub | None = None

    def answer(self, request: http_stub.Request) -> tuple[int, str]:
        assert self.slack is not None
        return self.slack.answer(Post.of(request))
