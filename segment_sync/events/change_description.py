"""What a changed event says changed: the names of the mapped fields whose values moved, and what they were."""

from __future__ import annotations

from typing import Any

import orjson

from segment_sync.events.mapped_values import rendered
from segment_sync.events.row_values import content_values
from segment_sync.field_mapping import Column, FieldMapping, Static, Tree, tree_of
from segment_sync.spec import SyncSpec


def describes_changes(sync: SyncSpec) -> bool:
    """Whether this sync's changed events name what changed."""
    return sync.changed_fields is not None or sync.previous_values is not None


def compared_fields(sync: SyncSpec) -> list[FieldMapping]:
    """The fields whose values can change, in declared order: all but static values."""
    return [m for m in sync.field_mappings if not isinstance(m.source, Static)]


def position_tree(fields: list[FieldMapping]) -> Tree:
    """The fields nested as the properties are, each leaf the field's position in `fields` (as a Column name)."""
    return tree_of([FieldMapping(m.name, m.path, Column(str(i))) for i, m in enumerate(fields)], "fields")


def change_members(sync: SyncSpec, before: str | None, after: str | None) -> dict[str, Any]:
    """The properties (or traits) that describe a change from the content last sent to the current one.

    A field changed when the value it sends differs, JSON text for JSON text; fields are listed by their names
    in `fields`, in that order, and their previous values nest as the properties do (nulls included).
    """
    if not describes_changes(sync):
        return {}
    old, new = content_values(before or "{}"), content_values(after or "{}")
    fields = compared_fields(sync)
    olds = [field_text(m, old) for m in fields]
    moved = [o != field_text(m, new) for m, o in zip(fields, olds, strict=True)]
    members: dict[str, Any] = {}
    if sync.changed_fields is not None:
        members[sync.changed_fields] = [m.name for m, changed in zip(fields, moved, strict=True) if changed]
    if sync.previous_values is not None:
        members[sync.previous_values] = _previous(position_tree(fields), moved, olds)
    return members


def field_text(mapping: FieldMapping, values: dict[str, bytes]) -> bytes | None:
    """A field's JSON text in a content (None when a column is not in it: sent by an older mapping)."""
    source = mapping.source
    return values.get(source.name) if isinstance(source, Column) else rendered(source, values)


def _previous(tree: Tree, moved: list[bool], olds: list[bytes | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, node in tree.items():
        if isinstance(node, dict):
            inner = _previous(node, moved, olds)
            if inner:
                out[key] = inner
        elif moved[i := int(node.name)]:  # type: ignore[union-attr]
            out[key] = orjson.Fragment(olds[i] or b"null")
    return out
