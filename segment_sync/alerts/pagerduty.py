"""PagerDuty's Events API v2, posted with requests: a failing sync triggers an incident, its recovery resolves it.

Each sync has one stable dedup key per topic (`segment-sync/<group>/<sync>` for failures, with `/rejected-rows`
for rejected rows), so PagerDuty keeps one incident open per sync whatever is sent twice.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from segment_sync.alerts.messages import FAILING, AlertMessage, short_error
from segment_sync.alerts.plain_text import lines, title
from segment_sync.alerts.settings import PagerDutySettings
from segment_sync.alerts.status import Delivery

DEFAULT_URL = "https://events.pagerduty.com"
SUMMARY_CHARS = 1024  # PagerDuty's limit
TIMEOUT_SECONDS = 10


class PagerDutyPoster:
    """Sends a sync's messages as events to one PagerDuty integration; never raises, never logs the routing key."""

    def __init__(self, routing_key: str, settings: PagerDutySettings, *, group: str, base_url: str | None = None):
        self._key = routing_key
        self.settings = settings
        self.group = group
        self.url = (base_url or DEFAULT_URL).rstrip("/") + "/v2/enqueue"

    def dedup_key(self, message: AlertMessage) -> str:
        """The incident's key: one per sync and topic, the same for its trigger and its resolve."""
        key = f"segment-sync/{self.group}/{message.sync}"
        return key if message.topic == FAILING else f"{key}/rejected-rows"

    def event(self, message: AlertMessage) -> dict[str, Any]:
        """The request body: a trigger for a problem, a resolve when it is over (it holds the routing key)."""
        body: dict[str, Any] = {
            "routing_key": self._key,
            "event_action": "trigger" if message.is_problem else "resolve",
            "dedup_key": self.dedup_key(message),
        }
        if not message.is_problem:
            return body
        failing = message.topic == FAILING
        details = {k: v for k, v in message.to_json().items() if v is not None and k != "finished_at"}
        return {
            **body,
            "payload": {
                "summary": short_error(
                    f"{title(message)}: {message.error}" if failing else title(message), SUMMARY_CHARS
                ),
                "source": urlparse(message.run_url).netloc or "segment-sync",
                "severity": self.settings.severity if failing else self.settings.rejected_rows_severity,
                "timestamp": datetime.datetime.fromtimestamp(message.finished_at, datetime.UTC).isoformat(),
                "component": message.sync,
                "group": self.group,
                "class": "sync failure" if failing else "rejected rows",
                "custom_details": {**details, "details": lines(message)},
            },
            "links": [{"href": message.run_url, "text": f"Dagster run {message.run_id[:8]}"}],
            "client": "segment-sync",
            "client_url": message.run_url,
        }

    def post(self, message: AlertMessage, log: logging.Logger) -> Delivery:
        """Send one event: 202 taken; 400 refused (dropped, logged); 429, 5xx or no answer: later."""
        sync, action = message.sync, "trigger" if message.is_problem else "resolve"
        try:
            response = requests.post(
                self.url, json=self.event(message), timeout=TIMEOUT_SECONDS, allow_redirects=False
            )  # a redirect would carry the routing key elsewhere
        except requests.RequestException as exc:
            log.warning(
                "Could not reach PagerDuty to send the %s for sync %r (%s: %s); check PAGERDUTY_EVENTS_URL and the "
                "network. It will be sent at a later evaluation.",
                action,
                sync,
                type(exc).__name__,
                short_error(self._redact(str(exc)), 200),
            )
            return Delivery.LATER
        if response.status_code == 202:
            return Delivery.TAKEN
        answer = _answer(response, self._redact)
        if response.status_code == 400:
            log.error(
                "PagerDuty refused the %s for sync %r as invalid (HTTP 400: %s). It is dropped, not retried; the "
                "sync's next run sends it again if it still applies. Check that %s holds the Integration Key of an "
                "Events API v2 integration.",
                action,
                sync,
                answer,
                self.settings.routing_key_env,
            )
            return Delivery.REFUSED
        hint = (
            "PagerDuty is rate-limiting this integration"
            if response.status_code == 429
            else "PagerDuty is having trouble"
            if response.status_code >= 500
            else f"check PAGERDUTY_EVENTS_URL and {self.settings.routing_key_env}"
        )
        log.warning(
            "PagerDuty did not take the %s for sync %r (HTTP %s: %s): %s. It will be sent at a later evaluation.",
            action,
            sync,
            response.status_code,
            answer,
            hint,
        )
        return Delivery.LATER

    def _redact(self, text: str) -> str:
        """The text with the secrets replaced; before it is cut (short_error), as a cut secret is not found."""
        return text.replace(self._key, f"[{self.settings.routing_key_env}]") if self._key else text


def _answer(response: requests.Response, redact: Callable[[str], str]) -> str:
    """PagerDuty's message and errors, or the start of a body that is not its JSON; redacted, then cut."""
    try:
        data = response.json()
        return short_error(redact("; ".join([str(data.get("message")), *map(str, data.get("errors") or [])])), 300)
    except (ValueError, AttributeError):
        return short_error(redact(response.text or "no body"), 200)
