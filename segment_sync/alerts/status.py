"""Each sync's alert status: what every channel was last told, and the messages it has not taken yet.

The status is kept in `<state_dir>/syncs/<sync>/alerts.json`, beside the sync's delivered state, so it survives a
wiped Dagster instance. For each channel (slack, pagerduty, email, webhook) it holds what the channel was last
told (is the sync failing? is it rejecting more rows than its threshold?) and its queue of messages not taken
yet. A run only queues a message for a channel when it changes what that channel was told: a sync that fails
every 5 minutes alerts once, and once more when it recovers. A message a channel did not take stays in that
channel's queue until a later evaluation delivers it, whatever the other channels did with it.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from segment_sync.alerts.messages import FAILING, REJECTING, AlertMessage, RunOutcome, message
from segment_sync.alerts.thresholds import RejectedThreshold
from segment_sync.storage import durable_file
from segment_sync.storage.layout import SyncFolder

ALERTS_FORMAT = 2  # 1: Slack only, {"told", "last_run_at", "pending"}


class Delivery(enum.Enum):
    """What a channel did with a message."""

    TAKEN = "taken"
    LATER = "later"  # not taken now (down, rate-limited, misconfigured): try again at a later evaluation
    REFUSED = "refused"  # refused for good (a bad payload, an address that does not exist): drop it


class Poster(Protocol):
    """One channel of one sync: renders a message its own way and posts it; never raises."""

    def post(self, message: AlertMessage, log: logging.Logger) -> Delivery: ...


@dataclass
class ChannelStatus:
    """What one channel was last told about a sync, and the messages it has not taken yet (topic -> message)."""

    told: dict[str, bool] = field(default_factory=lambda: {FAILING: False, REJECTING: False})
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class AlertState:
    """A sync's alert status: the newest run seen, and each channel's status."""

    last_run_at: float = 0.0
    channels: dict[str, ChannelStatus] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelStatus:
        """A channel's status, new (told nothing) the first time."""
        return self.channels.setdefault(name, ChannelStatus())


def observe(state: AlertState, outcome: RunOutcome, threshold: RejectedThreshold, channels: Iterable[str]) -> bool:
    """Queue, for each channel, the messages a run calls for; False when a newer run of the sync was already seen."""
    if outcome.finished_at < state.last_run_at:
        return False
    state.last_run_at = outcome.finished_at
    now = {FAILING: not outcome.succeeded}
    if outcome.delivery is not None:
        now[REJECTING] = threshold.exceeded(outcome.rejected, outcome.attempted)
    for name in channels:
        status = state.channel(name)
        for topic, problem in now.items():
            if problem == status.told[topic]:
                status.pending.pop(topic, None)  # back to what the channel already knows: no longer news
            else:
                status.pending[topic] = message(outcome, topic, problem, threshold).to_json()
    return True


def post_pending(state: AlertState, posters: Mapping[str, Poster], log: logging.Logger) -> None:
    """Post each channel's queued messages: taken ones become what it was told, refused ones are dropped."""
    for name, poster in posters.items():
        status = state.channel(name)
        for topic, queued in list(status.pending.items()):
            sent = AlertMessage.from_json(queued)
            delivery = poster.post(sent, log)
            if delivery is Delivery.TAKEN:
                status.told[topic] = sent.is_problem
            if delivery is not Delivery.LATER:
                del status.pending[topic]


def forget_channels(state: AlertState, configured: Collection[str], log: logging.Logger, sync: str) -> None:
    """Drop the status of channels no longer configured for the sync, and the messages they still had queued."""
    for name in [n for n in state.channels if n not in configured]:
        if state.channels.pop(name).pending:
            log.info("Channel %s is no longer set up for sync %r; its queued alerts are dropped", name, sync)


def pending_channels(folder: Path) -> set[str]:
    """The channels with messages waiting for a sync (read without the lock: a hint, not a promise)."""
    try:
        raw = orjson.loads(SyncFolder(folder).alerts.read_bytes())
        return {name for name, status in raw["channels"].items() if status.get("pending")}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return set()


@contextlib.contextmanager
def alert_state(folder: Path, log: logging.Logger) -> Iterator[AlertState]:
    """A sync's alert status, read under the sync's alert lock and saved atomically when the block ends."""

    folder.mkdir(parents=True, exist_ok=True)
    with open(SyncFolder(folder).alerts_lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        state = _load(SyncFolder(folder).alerts, log)
        yield state
        body = {
            "format": ALERTS_FORMAT,
            "last_run_at": state.last_run_at,
            "channels": {name: status.__dict__ for name, status in state.channels.items()},
        }
        durable_file.write_bytes(SyncFolder(folder).alerts, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def _load(path: Path, log: logging.Logger) -> AlertState:
    if not path.exists():
        return AlertState()
    try:
        raw = orjson.loads(path.read_bytes())
        if raw.get("format") == 1:
            return _from_format_1(raw, path, log)
        if raw.get("format") != ALERTS_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        channels = {
            str(name): ChannelStatus({**ChannelStatus().told, **status["told"]}, dict(status["pending"]))
            for name, status in raw["channels"].items()
        }
        return AlertState(float(raw["last_run_at"]), channels)
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s cannot be read (%s); starting the sync's alert status afresh", path, exc)
        return AlertState()


def _from_format_1(raw: dict[str, Any], path: Path, log: logging.Logger) -> AlertState:
    """What Slack was told, from the Slack-only format; its queued texts are dropped (the next run queues anew)."""
    if raw.get("pending"):
        log.warning(
            "%s holds Slack messages queued by an older segment-sync (%s); they are dropped, and the sync's next "
            "run queues them again if they still apply",
            path,
            ", ".join(raw["pending"]),
        )
    slack = ChannelStatus({**ChannelStatus().told, **raw["told"]})
    return AlertState(float(raw["last_run_at"]), {"slack": slack})
