"""An event's time as Segment wants it (ISO 8601, UTC, milliseconds, Z), from ISO text or epoch numbers."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from segment_sync.events.row_values import Number, RowRejected, json_kind
from segment_sync.spec import TimestampUnit

UNIT_WORDS = {"s": "seconds", "ms": "milliseconds"}
UNIT_FACTOR = {"s": 1000, "ms": 1}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def segment_timestamp(value: Any, column: str) -> str:
    """A time as Segment wants it (UTC, milliseconds, Z); raises RowRejected when it is not an ISO-8601 time."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        try:
            parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return _iso(parsed)
        except (ValueError, OverflowError):
            raise RowRejected(
                f"timestamp column {column!r} holds {value[:40]!r}, not an ISO-8601 time in years 1 to 9999"
            ) from None
    raise RowRejected(f"timestamp column {column!r} holds a {json_kind(value)}, not a time")


def epoch_timestamp(value: Any, column: str, unit: TimestampUnit) -> str:
    """Seconds or milliseconds since 1970 (a number, or text of one) as Segment's time; else RowRejected.

    Fractions of a millisecond are dropped (floored); a time outside years 1 to 9999 is rejected.
    """
    words = UNIT_WORDS[unit]
    if isinstance(value, Number | str):
        text = str(value).strip()
    else:
        raise RowRejected(f"timestamp column {column!r} holds a {json_kind(value)}, not a number of {words} since 1970")
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise RowRejected(f"timestamp column {column!r} holds {text[:40]!r}, not a number of {words} since 1970")
    millis = None if number.adjusted() > 20 else int((number * UNIT_FACTOR[unit]).to_integral_value(ROUND_FLOOR))
    if millis is None or not MIN_MS <= millis <= MAX_MS:
        raise RowRejected(f"timestamp column {column!r} holds {text[:40]}, {words} since 1970 outside years 1 to 9999")
    return _iso(EPOCH + dt.timedelta(milliseconds=millis))


def event_time(value: Any, column: str, unit: TimestampUnit | None) -> str:
    """A timestamp column's value as Segment's time: ISO text, dates and datetimes, or epoch numbers of `unit`."""
    return segment_timestamp(value, column) if unit is None else epoch_timestamp(value, column, unit)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
