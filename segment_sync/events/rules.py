"""The rules both event builders follow: event names, the library context, messageId shape, rejection reasons."""

from __future__ import annotations

from segment_sync import __version__
from segment_sync.segment_api.batching import MAX_EVENT_BYTES
from segment_sync.spec import ChangeKind, SyncSpec

MAX_MESSAGE_ID_CHARS = 100
AUDIENCE_EVENTS = {"added": "Segment Entered", "removed": "Segment Exited"}
LIBRARY = {"library": {"name": "segment-sync", "version": __version__}}
MESSAGE_ID_SEPARATOR = "\x1f"  # between the parts a generated messageId is hashed from
UUID_GROUPS = ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))  # (first hex digit, digits) of each group


def event_name(sync: SyncSpec, kind: ChangeKind) -> str | None:
    """The track event name for a change, or None when this sync sends nothing for it."""
    if sync.type == "track":
        return sync.events.for_kind(kind) if sync.events else None
    if sync.type == "audience":
        return AUDIENCE_EVENTS.get(kind)
    return None if kind == "removed" else sync.type


def uuid_shaped(hex_digest: str) -> str:
    """A hex digest's first 32 digits shaped like a UUID, as Segment's own messageIds are."""
    return "-".join(hex_digest[start : start + digits] for start, digits in UUID_GROUPS)


def no_user_id(sync: SyncSpec) -> str:
    """Why a row with neither a user id nor an anonymous id is not sent."""
    ids = " / ".join(repr(c) for c in (sync.user_id, sync.anonymous_id) if c)
    return f"no user id: {ids} is null or empty, and Segment drops events without one"


def no_group_id(sync: SyncSpec) -> str:
    """Why a group sync's row without a group id is not sent."""
    return f"no group id: {sync.group_id!r} is null or empty"


def empty_message_id(sync: SyncSpec) -> str:
    """Why a row whose message_id column is empty is not sent."""
    return f"message_id column {sync.message_id!r} is null or empty"


def long_message_id(sync: SyncSpec, chars: int | str) -> str:
    """Why a row whose message_id column holds too many characters is not sent."""
    return f"message_id column {sync.message_id!r} holds {chars} characters; Segment allows {MAX_MESSAGE_ID_CHARS}"


def integrations_not_object(sync: SyncSpec, kind: str) -> str:
    """Why a row whose integrations column holds something other than a JSON object is not sent."""
    return f"integrations column {sync.integrations_column!r} holds a {kind}, not a JSON object of destinations"


def oversized(size: int) -> str:
    """Why an event too large for Segment is not sent."""
    return f"event is {size:,} bytes; Segment's limit is {MAX_EVENT_BYTES:,} per event"
