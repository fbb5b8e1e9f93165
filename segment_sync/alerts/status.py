"""Slack alerts about syncs: the messages and each sync's alert status (no Dagster imports; slack.py posts them).

A sync's alert status is kept in `<state_dir>/syncs/<sync>/alerts.json`, beside its delivered state, so it
survives a wiped Dagster instance. It holds what Slack was last told (is the sync failing? is it rejecting
more rows than its threshold?) and the messages that could not be posted yet. A run only produces a message
when it changes what Slack was told: a sync that fails every 5 minutes posts once, and once more when it
recovers. A message that Slack did not take stays queued until a later evaluation posts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from segment_sync.storage import durable_file
from segment_sync.storage.layout import SyncFolder

ALERTS_FORMAT = 1
FAILING, REJECTING = "failing", "rejecting"
ERROR_CHARS = 300


class Poster(Protocol):
    """Where the messages go (slack.SlackPoster): True when the message was taken."""

    def post(self, text: str, sync: str, log: logging.Logger) -> bool: ...


@dataclass(frozen=True)
class RejectedThreshold:
    """Rejected rows above which a run is worth a warning: a row count ("25") or a percentage ("5%")."""

    limit: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> RejectedThreshold:
        """Read "0" (any rejected row), "25" (more than 25 rows) or "5%" (more than 5% of the rows sent)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", str(text))
        if not match or (match[2] and float(match[1]) > 100):
            raise ValueError(f"{text!r} is not a row count like '25' or a percentage like '5%'")
        return cls(float(match[1]), bool(match[2]))

    def exceeded(self, rejected: int, attempted: int) -> bool:
        """Whether a run that tried to send `attempted` rows and had `rejected` of them rejected is above it."""
        if self.percent:
            return rejected > 0 and rejected * 100 > self.limit * max(attempted, rejected)
        return rejected > self.limit

    def __str__(self) -> str:
        return f"{self.limit:g}%" if self.percent else _count(self.limit, "row")


def parse_thresholds(syncs: list[str], given: Mapping[str, str] | None) -> dict[str, RejectedThreshold]:
    """Each sync's rejected-rows threshold from {sync: "25" or "5%"}; a sync left out warns on any rejected row."""
    unknown = sorted(set(given or {}) - set(syncs))
    if unknown:
        raise ValueError(
            f"rejected_rows_threshold: no sync is named {', '.join(map(repr, unknown))} (syncs: {', '.join(syncs)})"
        )
    thresholds = {}
    for sync in syncs:
        try:
            thresholds[sync] = RejectedThreshold.parse((given or {}).get(sync, "0"))
        except ValueError as exc:
            raise ValueError(f"rejected_rows_threshold.{sync}: {exc}") from None
    return thresholds


@dataclass(frozen=True)
class RunOutcome:
    """What one finished run of a sync says, as the alerts need it."""

    sync: str
    model: str
    run_id: str
    run_url: str
    finished_at: float
    succeeded: bool
    error: str | None = None  # the first failed step and its message
    diff: Mapping[str, Any] | None = None  # the diff's metadata (added, changed, removed), when it ran
    delivery: Mapping[str, Any] | None = None  # the delivery's metadata, also when the delivery failed

    @property
    def rejected(self) -> int:
        """Rows the delivery rejected."""
        return int(self._delivered("rows_rejected"))

    @property
    def attempted(self) -> int:
        """Rows the run tried to send: each became an event that was sent, a rejected row or an undelivered row."""
        return int(self._delivered("events_sent") + self.rejected + self._delivered("rows_undelivered"))

    def _delivered(self, key: str) -> int:
        return (self.delivery or {}).get(key) or 0


@dataclass
class AlertState:
    """What Slack was last told about one sync, and the messages still to post."""

    told: dict[str, bool] = field(default_factory=lambda: {FAILING: False, REJECTING: False})
    last_run_at: float = 0.0
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {"status": bool, "text": str}


def observe(state: AlertState, outcome: RunOutcome, threshold: RejectedThreshold) -> bool:
    """Queue the messages a run calls for; False when a newer run of the sync was already seen."""
    if outcome.finished_at < state.last_run_at:
        return False
    state.last_run_at = outcome.finished_at
    _queue(state, FAILING, not outcome.succeeded, lambda: failure_text(outcome), lambda: recovered_text(outcome))
    if outcome.delivery is not None:
        over = threshold.exceeded(outcome.rejected, outcome.attempted)
        _queue(
            state, REJECTING, over, lambda: rejected_text(outcome, threshold), lambda: within_text(outcome, threshold)
        )
    return True


def _queue(state: AlertState, kind: str, now: bool, on: Callable[[], str], off: Callable[[], str]) -> None:
    if now == state.told[kind]:
        state.pending.pop(kind, None)  # back to what Slack already knows: a queued message is no longer news
    else:
        state.pending[kind] = {"status": now, "text": on() if now else off()}


def post_pending(state: AlertState, slack: Poster, sync: str, log: logging.Logger) -> None:
    """Post the queued messages; those Slack took become what it was told, the others stay queued."""
    for kind, message in list(state.pending.items()):
        if slack.post(message["text"], sync, log):
            state.told[kind] = message["status"]
            del state.pending[kind]


@contextlib.contextmanager
def alert_state(folder: Path, log: logging.Logger) -> Iterator[AlertState]:
    """A sync's alert status, read under the sync's alert lock and saved atomically when the block ends."""

    folder.mkdir(parents=True, exist_ok=True)
    with open(SyncFolder(folder).alerts_lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        state = _load(SyncFolder(folder).alerts, log)
        yield state
        body = {"format": ALERTS_FORMAT, **state.__dict__}
        durable_file.write_bytes(SyncFolder(folder).alerts, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def has_pending(folder: Path) -> bool:
    """Whether a sync has messages waiting to be posted (read without the lock: a hint, not a promise)."""
    try:
        return bool(orjson.loads(SyncFolder(folder).alerts.read_bytes()).get("pending"))
    except (OSError, orjson.JSONDecodeError):
        return False


def _load(path: Path, log: logging.Logger) -> AlertState:
    if not path.exists():
        return AlertState()
    try:
        raw = orjson.loads(path.read_bytes())
        if raw.get("format") != ALERTS_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        return AlertState({**AlertState().told, **raw["told"]}, float(raw["last_run_at"]), dict(raw["pending"]))
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s); starting the sync's alert status afresh", path, exc)
        return AlertState()


def failure_text(outcome: RunOutcome) -> str:
    """The message for a sync that starts failing."""
    return "\n".join(
        [
            f":red_circle: Segment sync *{outcome.sync}* (model `{outcome.model}`) failed.",
            f"> {_escape(short_error(outcome.error or 'the run failed without an error message'))}",
            f"So far: {counts_text(outcome)}.",
            f"Run: {_link(outcome)}",
        ]
    )


def recovered_text(outcome: RunOutcome) -> str:
    """The message for a failing sync whose run succeeded."""
    return "\n".join(
        [
            f":large_green_circle: Segment sync *{outcome.sync}* (model `{outcome.model}`) has recovered.",
            f"This run: {counts_text(outcome)}.",
            f"Run: {_link(outcome)}",
        ]
    )


def rejected_text(outcome: RunOutcome, threshold: RejectedThreshold) -> str:
    """The warning for a sync whose run rejected more rows than its threshold."""
    sample = list((outcome.delivery or {}).get("rejected_sample") or [])
    reasons = Counter(_reason(str(r.get("reason"))) for r in sample)
    keys = ", ".join("null" if r.get("key") is None else f"`{_escape(str(r['key']))}`" for r in sample[:10])
    lines = [
        f":warning: Segment sync *{outcome.sync}* (model `{outcome.model}`) rejected {outcome.rejected} of the "
        f"{outcome.attempted} rows it tried to send ({_percent(outcome)}), above its threshold of {threshold}.",
        f"Reasons, in a sample of {_count(len(sample), 'row')}: "
        + "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common(3)),
        f"Sample keys: {keys or 'none'}",
    ]
    path = (outcome.delivery or {}).get("rejected_rows_file")
    if path:
        lines.append(f"All rejected rows: `{path}`")
    lines.append(f"Run: {_link(outcome)}")
    return "\n".join(lines)


def within_text(outcome: RunOutcome, threshold: RejectedThreshold) -> str:
    """The message for a sync whose rejected rows are back within its threshold."""
    return (
        f":white_check_mark: Segment sync *{outcome.sync}* (model `{outcome.model}`) is back within its rejected-rows "
        f"threshold of {threshold}: {outcome.rejected} of {outcome.attempted} rows rejected. Run: {_link(outcome)}"
    )


def counts_text(outcome: RunOutcome) -> str:
    """The diff's and the delivery's counts in one line."""
    parts = []
    if outcome.diff is not None:
        parts.append(", ".join(f"{outcome.diff.get(k, 0)} {k}" for k in ("added", "changed", "removed")))
    else:
        parts.append("no diff")
    if outcome.delivery is not None:
        d = outcome.delivery
        parts.append(
            f"{_count(d.get('events_sent') or 0, 'event')} sent, {_count(outcome.rejected, 'row')} rejected, "
            f"{_count(d.get('rows_undelivered') or 0, 'row')} undelivered"
        )
    else:
        parts.append("nothing delivered")
    return "; ".join(parts)


def short_error(text: str, limit: int = ERROR_CHARS) -> str:
    """An error on one or two lines: whitespace folded, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _reason(text: str) -> str:
    # A null-key row's reason ends with the row's content (a JSON object): it may hold personal data, keep it out
    return _escape(short_error(text.split(": {", 1)[0], 150))


def _count(n: float, noun: str) -> str:
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"


def _percent(outcome: RunOutcome) -> str:
    return f"{100 * outcome.rejected / max(outcome.attempted, 1):.0f}%"


def _link(outcome: RunOutcome) -> str:
    return f"<{outcome.run_url}|{outcome.run_id[:8]}>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
