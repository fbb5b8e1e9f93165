"""A message as plain text: a one-line title and a few lines of detail (email, PagerDuty, webhooks)."""

from __future__ import annotations

from segment_sync.alerts.messages import AlertMessage
from segment_sync.alerts.thresholds import count_text


def title(message: AlertMessage) -> str:
    """The message in one line: an email's subject, a PagerDuty incident's summary."""
    sync = f"Segment sync {message.sync} (model {message.model})"
    if message.kind == "failing":
        return f"{sync} failed"
    if message.kind == "recovered":
        return f"{sync} has recovered"
    if message.kind == "rejecting":
        return (
            f"{sync} rejected {message.rejected} of the {message.attempted} rows it tried to send "
            f"({message.percent_rejected}), above its threshold of {message.threshold}"
        )
    return f"{sync} is back within its rejected-rows threshold of {message.threshold}"


def lines(message: AlertMessage) -> list[str]:
    """The detail under the title, ending with the link to the run."""
    if message.kind == "failing":
        detail = [f"Error: {message.error}", f"So far: {counts_text(message)}."]
    elif message.kind == "recovered":
        detail = [f"This run: {counts_text(message)}."]
    elif message.kind == "rejecting":
        detail = [
            f"Reasons, in a sample of {count_text(message.sample_size, 'row')}: {reasons_text(message)}",
            f"Sample keys: {', '.join(key_text(k) for k in message.sample_keys) or 'none'}",
        ]
        if message.rejected_rows_file:
            detail.append(f"All rejected rows: {message.rejected_rows_file}")
    else:
        detail = [f"{message.rejected} of {message.attempted} rows rejected."]
    return [*detail, f"Run: {message.run_url}"]


def text(message: AlertMessage) -> str:
    """Title and detail as one text."""
    return "\n".join([title(message), *lines(message)])


def counts_text(message: AlertMessage) -> str:
    """The diff's and the delivery's counts in one line."""
    parts = []
    if message.diff is not None:
        parts.append(", ".join(f"{message.diff.get(k, 0)} {k}" for k in ("added", "changed", "removed")))
    else:
        parts.append("no diff")
    if message.delivery is not None:
        d = message.delivery
        parts.append(
            f"{count_text(d['events_sent'], 'event')} sent, {count_text(d['rows_rejected'], 'row')} rejected, "
            f"{count_text(d['rows_undelivered'], 'row')} undelivered"
        )
    else:
        parts.append("nothing delivered")
    return "; ".join(parts)


def reasons_text(message: AlertMessage) -> str:
    """The commonest rejection reasons: "2 × no user id; 1 × ..."."""
    return "; ".join(f"{n} × {reason}" for reason, n in message.reasons)


def key_text(key: str | None) -> str:
    """A sample key as shown: its value, or null."""
    return "null" if key is None else key
