"""A local stub of PagerDuty's Events API v2 (`POST /v2/enqueue`) over real HTTP: it checks each event against the
documented schema and keeps incidents by dedup_key, as PagerDuty does."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from segment_sync_tests.support.http_stub import HttpStub, Request

SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}
TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


@dataclass
class Incident:
    """One incident: its alerts' events in order, and whether it is still open."""

    dedup_key: str
    events: list[dict[str, Any]] = field(default_factory=list)
    resolved: bool = False


@dataclass
class PagerDutyStub(HttpStub):
    """The Events API: 202 for a valid event, 400 with PagerDuty's errors otherwise; incidents by dedup_key."""

    routing_keys: tuple[str, ...] = ("R" * 32,)  # the integrations' keys it knows
    incidents: list[Incident] = field(default_factory=list)  # every incident opened, oldest first

    def open(self, dedup_key: str) -> Incident | None:
        """The open incident of a dedup key, if any."""
        return next((i for i in self.incidents if i.dedup_key == dedup_key and not i.resolved), None)

    def events(self) -> list[dict[str, Any]]:
        """The events accepted, in order."""
        return [json.loads(r.body) for r in self.requests if r.status == 202]

    def answer(self, request: Request) -> tuple[int, str]:
        """Check the event as PagerDuty documents it, then apply it to the incidents."""
        errors = self._errors(request)
        if errors:
            return 400, json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        event = json.loads(request.body)
        key = event["dedup_key"]
        incident = self.open(key)
        if event["event_action"] == "trigger":
            if incident is None:
                incident = Incident(key)
                self.incidents.append(incident)
            incident.events.append(event)
        elif incident is not None:  # acknowledge or resolve; on no open incident PagerDuty drops it
            incident.events.append(event)
            incident.resolved = event["event_action"] == "resolve"
        return 202, json.dumps({"status": "success", "message": "Event processed", "dedup_key": key})

    def _errors(self, request: Request) -> list[str]:
        if request.path != "/v2/enqueue":
            return [f"Unknown path {request.path}"]
        if not request.headers.get("content-type", "").startswith("application/json"):
            return ["Content-Type must be application/json"]
        try:
            event = json.loads(request.body)
        except ValueError:
            return ["Request body is not JSON"]
        errors = [f"Unknown field {k}" for k in sorted(set(event) - TOP_LEVEL)]
        if event.get("routing_key") not in self.routing_keys:
            errors.append("Invalid routing key")
        if event.get("event_action") not in ACTIONS:
            errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
        key = event.get("dedup_key")
        if not isinstance(key, str) or not key or len(key) > 255:
            errors.append("'dedup_key' must be a string of 1 to 255 characters")  # we always send one
        for link in event.get("links") or []:
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                errors.append("'links' must be objects with an href")
        if event.get("event_action") == "trigger":
            errors += _payload_errors(event.get("payload"))
        return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [f"Unknown field payload.{k}" for k in sorted(set(payload) - PAYLOAD)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) > 1024:
        errors.append("'payload.summary' must be a string of 1 to 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    if "timestamp" in payload:
        try:
            datetime.datetime.fromisoformat(payload["timestamp"])
        except (TypeError, ValueError):
            errors.append("'payload.timestamp' is not an ISO 8601 time")
    return errors
