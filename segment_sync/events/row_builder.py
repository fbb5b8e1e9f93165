"""Turning diff rows into Segment payloads, or into rejected rows with a reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from segment_sync.events import rules
from segment_sync.events.change_description import change_members
from segment_sync.events.event_time import event_time, segment_timestamp
from segment_sync.events.mapped_values import mapped_object
from segment_sync.events.row_values import Number, RowRejected, column_value, content_values, json_kind, value_of
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
    bag = mapped_object(sync.field_tree, values, omit_nulls=sync.omit_nulls)
    if row.kind == "changed":
        bag.update(change_members(sync, row.before, row.after))
    message["traits" if sync.type in ("identify", "group") else "properties"] = bag
    if sync.timestamp is not None:
        if row.kind == "removed":
            if removed_at is not None:
                message["timestamp"] = segment_timestamp(removed_at, sync.timestamp)
        elif (stamp := column_value(values, sync.timestamp)) is not None:
            message["timestamp"] = event_time(stamp, sync.timestamp, sync.timestamp_unit)
    message_id = _message_id(sync, row, values, sync_uuid)
    message["messageId"] = message_id
    message["context"] = {**LIBRARY, **mapped_object(sync.context_tree, values, omit_nulls=sync.omit_nulls)}
    integrations = _integrations(sync, values)
    if integrations is not None:
        message["integrations"] = integrations
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


def _id_value(values: dict[str, bytes], column: str | None, setting: str) -> str | None:
    value = column_value(values, column)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Number):
        text = _number_id(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise RowRejected(f"{setting} column {column!r} holds a {json_kind(value)}, not a string or number")
    return text or None


def _number_id(number: Number) -> str:
    """A number as an id: its digits when it is whole (42.00 is "42"), else its text."""
    try:
        value = Decimal(number.text)
    except InvalidOperation:
        return number.text
    whole = value.is_finite() and value.adjusted() < 400 and value == value.to_integral_value()  # 1e999999999 stays
    return str(int(value)) if whole else number.text


def uses_message_id_column(sync: SyncSpec, row: DiffRow) -> bool:
    """Whether the row's messageId is its message_id column: only for its first delivery, as added.

    A change, a removal, a row added again after a removal or a full resync (all of which have a generation
    before) is another event, and reusing the id would make Segment drop it as a duplicate.
    """
    return sync.message_id is not None and row.kind == "added" and row.before_gen is None


def _message_id(sync: SyncSpec, row: DiffRow, values: dict[str, bytes], sync_uuid: str) -> str:
    if not uses_message_id_column(sync, row):
        return message_id_for(sync_uuid, row)
    value = column_value(values, sync.message_id or "")
    if value is None or str(value).strip() == "":
        raise RowRejected(rules.empty_message_id(sync))
    text = str(value)
    if len(text) > MAX_MESSAGE_ID_CHARS:
        raise RowRejected(rules.long_message_id(sync, len(text)))
    return text


def _integrations(sync: SyncSpec, values: dict[str, bytes]) -> Any:
    """The integrations object: the sync's own, or the row's column (none when null); RowRejected if not an object."""
    if isinstance(sync.integrations, dict):
        return orjson.Fragment(dumps(sync.integrations))
    column = sync.integrations_column
    text = values.get(column, b"null") if column is not None else b"null"
    if text == b"null":
        return None
    if text[:1] != b"{":
        raise RowRejected(rules.integrations_not_object(sync, json_kind(value_of(text))))
    return orjson.Fragment(text)
