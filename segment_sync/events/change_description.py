"""What a changed event says changed: the names of the mapped fields whose values moved, and what they were."""

from __future__ import annotations

from typing import Any

from segment_sync.events.mapped_values import mapped_object, rendered
from segment_sync.events.row_values import content_values
from segment_sync.field_mapping import tree_of
from segment_sync.spec import SyncSpec


def describes_changes(sync: SyncSpec) -> bool:
    """Whether this sync's changed events name what changed."""
    return sync.changed_fields is not None or sync.previous_values is not None


def change_members(sync: SyncSpec, before: str | bytes | None, after: str | bytes | None) -> dict[str, Any]:
    """The properties (or traits) that describe a change from the content last sent to the current one.

    A field changed when the value it sends differs, JSON text for JSON text; fields are listed by their names
    in `fields`, in that order, and their previous values nest as the fields do (nulls included).
    """
    if not describes_changes(sync):
        return {}
    old = content_values(before or "{}")
    new = content_values(after or "{}")
    moved = [m for m in sync.field_mappings if rendered(m.source, old) != rendered(m.source, new)]
    members: dict[str, Any] = {}
    if sync.changed_fields is not None:
        members[sync.changed_fields] = [m.name for m in moved]
    if sync.previous_values is not None:
        members[sync.previous_values] = mapped_object(tree_of(moved, "fields"), old, omit_nulls=False)
    return members
