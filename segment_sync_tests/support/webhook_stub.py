"""A local webhook receiver over real HTTP: it verifies each request's signature as the README tells receivers to."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from segment_sync_tests.support.http_stub import HttpStub, Request

MAX_AGE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """The README's check: HMAC-SHA256 of "<timestamp>." + the raw body, and a timestamp no older than 5 minutes."""
    timestamp = headers.get("x-segment-sync-timestamp", "")
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = timestamp.isdigit() and abs((now or time.time()) - int(timestamp)) <= MAX_AGE_SECONDS
    return fresh and hmac.compare_digest(expected, headers.get("x-segment-sync-signature", ""))


@dataclass
class WebhookStub(HttpStub):
    """Takes signed JSON at any path (2xx); a bad or missing signature gets 401 when `secret` is set."""

    secret: str | None = None

    def bodies(self) -> list[dict[str, Any]]:
        """The bodies taken, in order."""
        return [json.loads(r.body) for r in self.requests if 200 <= r.status < 300]

    def answer(self, request: Request) -> tuple[int, str]:
        """401 for a request whose signature does not verify, else 204-like 200."""
        if self.secret is not None and not verify(self.secret, request.headers, request.body):
            return 401, json.dumps({"error": "bad signature"})
        json.loads(request.body)
        return 200, json.dumps({"ok": True})
