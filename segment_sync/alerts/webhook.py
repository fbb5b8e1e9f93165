"""Webhooks: a message as JSON, POSTed with requests to any URL, signed with HMAC-SHA256 when a secret is set.

The signature covers the timestamp and the exact body bytes: `X-Segment-Sync-Signature: sha256=<hex of
HMAC-SHA256(secret, "<X-Segment-Sync-Timestamp>." + body)>`. A receiver recomputes it over the raw body, compares
in constant time and refuses timestamps older than a few minutes (a replay). The README shows how.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from segment_sync.alerts.messages import AlertMessage, short_error
from segment_sync.alerts.plain_text import text, title
from segment_sync.alerts.status import Delivery

FORMAT_VERSION = 1
SIGNATURE_HEADER = "X-Segment-Sync-Signature"
TIMESTAMP_HEADER = "X-Segment-Sync-Timestamp"
REFUSED = {400, 405, 410, 413, 415, 422}  # the receiver will not take this body however often it is sent


def body(message: AlertMessage) -> dict[str, Any]:
    """The JSON a receiver gets: the message's fields, its title and text, and an id to drop repeats by."""
    finished = datetime.datetime.fromtimestamp(message.finished_at, datetime.UTC).isoformat()
    return {
        "version": FORMAT_VERSION,
        "id": f"{message.sync}/{message.kind}/{message.run_id}",
        **message.to_json(),
        "finished_at": finished,
        "title": title(message),
        "text": text(message),
    }


def signature(secret: str, timestamp: str, data: bytes) -> str:
    """The signature header's value: sha256=<hex HMAC-SHA256 of "<timestamp>." followed by the body bytes>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + data, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookPoster:
    """POSTs a sync's messages to one URL; never raises, never logs the URL's path or the secret."""

    def __init__(self, url: str, secret: str | None, timeout: float = 10.0, *, url_env: str = "ALERT_WEBHOOK_URL"):
        self._url = url
        self._secret = secret
        self.timeout = timeout
        self.url_env = url_env
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname or '?'}"  # what logs may show of the URL

    def post(self, message: AlertMessage, log: logging.Logger) -> Delivery:
        """POST one message: 2xx taken; a body the receiver refuses is dropped; anything else: later."""
        data = orjson.dumps(body(message))
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "segment-sync", TIMESTAMP_HEADER: timestamp}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, data)
        sync = message.sync
        try:
            response = requests.post(self._url, data=data, headers=headers, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            log.warning(
                "Could not reach the webhook at %s to post the alert for sync %r (%s: %s); check %s and the network. "
                "It will be posted at a later evaluation.",
                self.where,
                sync,
                type(exc).__name__,
                short_error(self._redact(str(exc)), 200),
                self.url_env,
            )
            return Delivery.LATER
        if 200 <= response.status_code < 300:
            return Delivery.TAKEN
        answer = short_error(self._redact(response.text or "no body"), 200)
        if response.status_code in REFUSED or 300 <= response.status_code < 400:
            log.error(
                "The webhook at %s refused the alert for sync %r (HTTP %s: %s). It is dropped, not retried; the "
                "sync's next run posts it again if it still applies. Check %s (a redirect means the URL is not the "
                "final one) and what the receiver expects.",
                self.where,
                sync,
                response.status_code,
                answer,
                self.url_env,
            )
            return Delivery.REFUSED
        log.warning(
            "The webhook at %s did not take the alert for sync %r (HTTP %s: %s). It will be posted at a later "
            "evaluation.",
            self.where,
            sync,
            response.status_code,
            answer,
        )
        return Delivery.LATER

    def _redact(self, text: str) -> str:
        """The text with the secrets replaced; before it is cut (short_error), as a cut secret is not found."""
        parts = urlsplit(self._url)
        for secret, name in (
            (self._url, self.url_env),
            (parts.path + (f"?{parts.query}" if parts.query else ""), "<path>"),
            (parts.query, "<query>"),
            (self._secret, "<secret>"),
        ):
            if secret and len(secret) > 1:
                text = text.replace(secret, f"[{name}]")
        return text
