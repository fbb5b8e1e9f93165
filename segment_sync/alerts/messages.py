"""What the alerts say, for every channel alike: a finished run of a sync, and the messages it calls for.

A message is channel-neutral (its kind, the sync, the run, the error, the counts, the rejected rows); each
channel (slack.py, pagerduty.py, email.py, webhook.py) decides only how to say it. Messages are kept as JSON in
the sync's alert status until every channel has taken them, so they hold plain values only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from segment_sync.alerts.thresholds import RejectedThreshold

FAILING, REJECTING = "failing", "rejecting"  # the two things a channel is told about a sync: its topics
Kind = Literal["failing", "recovered", "rejecting", "rejecting_recovered"]
ERROR_CHARS = 300
SAMPLE_KEYS = 10
REASONS = 3
DIFF_COUNTS = ("added", "changed", "removed")


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


@dataclass(frozen=True)
class AlertMessage:
    """One thing to tell about a sync, with everything any channel may show (no row content, no secret)."""

    kind: Kind
    sync: str
    model: str
    run_id: str
    run_url: str
    finished_at: float
    error: str | None = None  # failing only: the error on a line or two
    diff: dict[str, int] | None = None  # added, changed, removed; None when the diff did not run
    delivery: dict[str, int] | None = None  # events_sent, rows_rejected, rows_undelivered; None when nothing was
    threshold: str | None = None  # rejecting and rejecting_recovered: the sync's threshold, e.g. "5%" or "25 rows"
    rejected: int = 0
    attempted: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)  # the commonest rejection reasons in the sample
    sample_size: int = 0
    sample_keys: list[str | None] = field(default_factory=list)  # primary keys of rejected rows (None: a null key)
    rejected_rows_file: str | None = None

    @property
    def topic(self) -> str:
        """FAILING or REJECTING: what the message changes about the sync's status."""
        return FAILING if self.kind in ("failing", "recovered") else REJECTING

    @property
    def is_problem(self) -> bool:
        """Whether the message says something is wrong (failing, rejecting) rather than that it is over."""
        return self.kind in ("failing", "rejecting")

    @property
    def percent_rejected(self) -> str:
        """Rejected rows as a share of the rows the run tried to send, e.g. "40%"."""
        return f"{100 * self.rejected / max(self.attempted, 1):.0f}%"

    def to_json(self) -> dict[str, Any]:
        """The message as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertMessage:
        """A message saved by to_json."""
        return cls(**{**data, "reasons": [(str(r), int(n)) for r, n in data.get("reasons") or []]})


def message(outcome: RunOutcome, topic: str, problem: bool, threshold: RejectedThreshold) -> AlertMessage:
    """The message that tells a channel a sync's `topic` is now `problem` (failing or not, rejecting or not)."""
    kinds: dict[tuple[str, bool], Kind] = {
        (FAILING, True): "failing",
        (FAILING, False): "recovered",
        (REJECTING, True): "rejecting",
        (REJECTING, False): "rejecting_recovered",
    }
    kind = kinds[(topic, problem)]
    base = AlertMessage(
        kind=kind,
        sync=outcome.sync,
        model=outcome.model,
        run_id=outcome.run_id,
        run_url=outcome.run_url,
        finished_at=outcome.finished_at,
        error=short_error(outcome.error or "the run failed without an error message") if kind == "failing" else None,
        diff=None if outcome.diff is None else {k: int(outcome.diff.get(k) or 0) for k in DIFF_COUNTS},
        delivery=_delivery(outcome),
        rejected=outcome.rejected,
        attempted=outcome.attempted,
    )
    if topic == FAILING:
        return base
    rejected = replace(base, threshold=str(threshold))
    if not problem:
        return rejected
    sample = list((outcome.delivery or {}).get("rejected_sample") or [])
    return replace(
        rejected,
        reasons=Counter(_reason(str(r.get("reason"))) for r in sample).most_common(REASONS),
        sample_size=len(sample),
        sample_keys=[None if r.get("key") is None else str(r["key"]) for r in sample[:SAMPLE_KEYS]],
        rejected_rows_file=(outcome.delivery or {}).get("rejected_rows_file"),
    )


def short_error(text: str, limit: int = ERROR_CHARS) -> str:
    """An error on one or two lines: whitespace folded, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _delivery(outcome: RunOutcome) -> dict[str, int] | None:
    if outcome.delivery is None:
        return None
    return {
        "events_sent": int(outcome.delivery.get("events_sent") or 0),
        "rows_rejected": outcome.rejected,
        "rows_undelivered": int(outcome.delivery.get("rows_undelivered") or 0),
    }


def _reason(text: str) -> str:
    # A null-key row's reason ends with the row's content (a JSON object): it may hold personal data, keep it out
    return short_error(text.split(": {", 1)[0], 150)
