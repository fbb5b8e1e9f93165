"""Turning diff rows into Segment payloads, or into rejected rows with a reason."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import orjson

from segment_sync.events import rules
from segment_sync.events.rules import LIBRARY, MAX_MESSAGE_ID_CHARS, event_name
from segment_sync.segment_api.batching import MAX_EVENT_BYTES
from segment_sync.spec import ChangeKind, SyncSpec
from segment_sync.values.encoding import dumps


@dataclass(frozen=True)
class DiffRow:
    """One row of a sync's diff: the key, the change kind and the content before and after."""

    key: str
    kind: ChangeKind
    before_gen: int | None
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Event:
    """A serialized Segment message for one diff row."""

    row: DiffRow
    message_id: str
    type: str
    name: str | None
    payload: bytes


@dataclass(frozen=True)
class Outcome:
    """What became of a diff row before sending: an event, a skip (nothing to send) or a rejection."""

    row: DiffRow
    event: Event | None = None
    rejected: str | None = None

    @property
    def skipped(self) -> bool:
        return self.event is None and self.rejected is None


class RowRejected(ValueError):
    """A row that cannot become a valid Segment event."""


def message_id_for(sync_uuid: str, row: DiffRow) -> str:
    """A messageId unique to this sync, key and change, and the same on every retry of it.

    The generation of the last delivered state is part of it, so a change that repeats an earlier
    one (A -> B, B -> A, A -> B) still gets a new id.
    """
    parts = (sync_uuid, row.key, row.kind, str(row.before_gen), row.before or "", row.after or "")
    return rules.uuid_shaped(hashlib.sha256(rules.MESSAGE_ID_SEPARATOR.join(parts).encode()).hexdigest())


def build_outcomes(
    sync: SyncSpec, rows: Iterable[DiffRow], sync_uuid: str, *, initial: bool, removed_at: str | None = None
) -> Iterator[Outcome]:
    """The outcome of each diff row for this sync (`removed_at`: when the snapshot that saw removals was taken)."""
    send_rows = sync.sends_initial or not initial
    for row in rows:
        if not send_rows or event_name(sync, row.kind) is None:
            yield Outcome(row)
            continue
        try:
            yield Outcome(row, event=build_event(sync, row, sync_uuid, removed_at))
        except RowRejected as exc:
            yield Outcome(row, rejected=str(exc))


def build_event(sync: SyncSpec, row: DiffRow, sync_uuid: str, removed_at: str | None = None) -> Event:
    """The Segment message for one diff row; raises RowRejected when Segment would drop it.

    A removed row's event carries the content last delivered, and is timed when the snapshot that saw the
    removal was taken (`removed_at`), not by its old timestamp column.
    """
    content = row.before if row.kind == "removed" else row.after
    values = content_values(content or "{}")
    message: dict[str, Any] = {"type": "track" if sync.type in ("track", "audience") else sync.type}
    name = event_name(sync, row.kind)
    if message["type"] == "track":
        message["event"] = name
    user_id = _id_value(values, sync.user_id, "user_id")
    anonymous_id = _id_value(values, sync.anonymous_id, "anonymous_id")
    if user_id is None and anonymous_id is None:
        raise RowRejected(rules.no_user_id(sync))
    if user_id is not None:
        message["userId"] = user_id
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    if sync.type == "group":
        group_id = _id_value(values, sync.group_id, "group_id")
        if group_id is None:
            raise RowRejected(rules.no_group_id(sync))
        message["groupId"] = group_id
    fields = {name: orjson.Fragment(values.get(column, b"null")) for name, column in sync.field_map.items()}
    message["traits" if sync.type in ("identify", "group") else "properties"] = fields
    stamp = removed_at if row.kind == "removed" else _value(values, sync.timestamp)
    if sync.timestamp is not None and stamp is not None:
        message["timestamp"] = segment_timestamp(stamp, sync.timestamp)
    message_id = _message_id(sync, row, values, sync_uuid)
    message["messageId"] = message_id
    message["context"] = LIBRARY
    payload = dumps(message)
    if len(payload) > MAX_EVENT_BYTES:
        raise RowRejected(rules.oversized(len(payload)))
    return Event(row=row, message_id=message_id, type=message["type"], name=name, payload=payload)


def identity(sync: SyncSpec, content: str) -> tuple[str | None, ...]:
    """The user and anonymous id a content gives, as its events carry them (None where it gives none)."""
    values = content_values(content)
    ids = []
    for column, setting in ((sync.user_id, "user_id"), (sync.anonymous_id, "anonymous_id")):
        try:
            ids.append(_id_value(values, column, setting))
        except RowRejected:
            ids.append(None)
    return tuple(ids)


def content_values(content: str | bytes) -> dict[str, bytes]:
    """Each sent column's JSON text in a row's content, exactly as the content holds it."""
    raw = msgspec.json.decode(content, type=dict[str, msgspec.Raw])
    return {name: bytes(value) for name, value in raw.items()}


class _Number:
    """A JSON number, as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _value(values: dict[str, bytes], column: str | None) -> Any:
    """A column's value: strings, booleans, lists and objects decoded, numbers as their text (`_Number`)."""
    text = values.get(column) if column is not None else None
    if text is None or text == b"null":
        return None
    if text[:1] in b'"tf[{':
        return orjson.loads(text)
    return _Number(text.decode())


def _id_value(values: dict[str, bytes], column: str | None, setting: str) -> str | None:
    value = _value(values, column)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, _Number):
        text = _number_id(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise RowRejected(f"{setting} column {column!r} holds a {_json_kind(value)}, not a string or number")
    return text or None


def _number_id(number: _Number) -> str:
    """A number as an id: its digits when it is whole (42.00 is "42"), else its text."""
    try:
        value = Decimal(number.text)
    except InvalidOperation:
        return number.text
    whole = value.is_finite() and value.adjusted() < 400 and value == value.to_integral_value()  # 1e999999999 stays
    return str(int(value)) if whole else number.text


def _json_kind(value: Any) -> str:
    """What a decoded value is, in JSON's words."""
    kinds = {dict: "JSON object", list: "JSON array", bool: "boolean", _Number: "number"}
    return kinds.get(type(value), type(value).__name__)


def segment_timestamp(value: Any, column: str) -> str:
    """A time as Segment wants it (UTC, milliseconds, Z); raises RowRejected when it is not an ISO-8601 time."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        try:
            parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        except (ValueError, OverflowError):
            raise RowRejected(
                f"timestamp column {column!r} holds {value[:40]!r}, not an ISO-8601 time in years 1 to 9999"
            ) from None
    raise RowRejected(f"timestamp column {column!r} holds a {_json_kind(value)}, not a time")


def uses_message_id_column(sync: SyncSpec, row: DiffRow) -> bool:
    """Whether the row's messageId is its message_id column: only for its first delivery, as added.

    A change, a removal, a row added again after a removal or a full resync (all of which have a generation
    before) is another event, and reusing the id would make Segment drop it as a duplicate.
    """
    return sync.message_id is not None and row.kind == "added" and row.before_gen is None


def _message_id(sync: SyncSpec, row: DiffRow, values: dict[str, bytes], sync_uuid: str) -> str:
    if not uses_message_id_column(sync, row):
        return message_id_for(sync_uuid, row)
    value = _value(values, sync.message_id or "")
    if value is None or str(value).strip() == "":
        raise RowRejected(rules.empty_message_id(sync))
    text = str(value)
    if len(text) > MAX_MESSAGE_ID_CHARS:
        raise RowRejected(rules.long_message_id(sync, len(text)))
    return text
