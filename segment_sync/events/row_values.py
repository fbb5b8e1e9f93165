"""A row's values as its content holds them: each sent column's JSON text, decoded only where a rule needs it."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson


class RowRejected(ValueError):
    """A row that cannot become a valid Segment event."""


class Number:
    """A JSON number, as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def content_values(content: str | bytes) -> dict[str, bytes]:
    """Each sent column's JSON text in a row's content, exactly as the content holds it."""
    raw = msgspec.json.decode(content, type=dict[str, msgspec.Raw])
    return {name: bytes(value) for name, value in raw.items()}


def value_of(text: bytes | None) -> Any:
    """A JSON text's value: strings, booleans, lists and objects decoded, numbers as their text (`Number`)."""
    if text is None or text == b"null":
        return None
    if text[:1] in b'"tf[{':
        return orjson.loads(text)
    return Number(text.decode())


def column_value(values: dict[str, bytes], column: str | None) -> Any:
    """A column's value (see `value_of`); None for no column."""
    return value_of(values.get(column)) if column is not None else None


def json_kind(value: Any) -> str:
    """What a decoded value is, in JSON's words."""
    kinds = {dict: "JSON object", list: "JSON array", bool: "boolean", Number: "number", str: "string"}
    return kinds.get(type(value), type(value).__name__)
