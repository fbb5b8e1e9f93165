"""Mapped values of one row, row by row: a column's JSON as the content holds it, a static value, a template."""

from __future__ import annotations

from typing import Any

import orjson

from segment_sync.events.row_values import value_of
from segment_sync.field_mapping import Column, Source, Static, Tree
from segment_sync.values.encoding import dumps

NULL = b"null"


def rendered(source: Source, values: dict[str, bytes]) -> bytes:
    """A mapped value's JSON text for a row whose sent columns' JSON texts are `values`."""
    if isinstance(source, Column):
        return values.get(source.name, NULL)
    if isinstance(source, Static):
        return dumps(source.value)
    pieces: list[str] = []
    found = not source.columns  # a template without references is its text
    for part in source.parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        text = values.get(part.name, NULL)
        if text != NULL:
            found = True
            pieces.append(template_piece(text))
    return orjson.dumps("".join(pieces)) if found else NULL


def template_piece(text: bytes) -> str:
    """A value as a template writes it: a string as it is, anything else as its JSON text."""
    value = value_of(text)
    return value if isinstance(value, str) else text.decode()


def mapped_object(tree: Tree, values: dict[str, bytes], *, omit_nulls: bool) -> dict[str, Any]:
    """The object a mapping tree builds for a row, JSON texts as fragments.

    With `omit_nulls`, null values are left out, and so are nested objects left empty.
    """
    out: dict[str, Any] = {}
    for key, node in tree.items():
        if isinstance(node, dict):
            inner = mapped_object(node, values, omit_nulls=omit_nulls)
            if inner or not omit_nulls:
                out[key] = inner
            continue
        text = rendered(node, values)
        if text != NULL or not omit_nulls:
            out[key] = orjson.Fragment(text)
    return out
