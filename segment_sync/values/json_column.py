"""The JSON column type: each value is the warehouse's own JSON rendering of it, sent as it is.

A JSON column is held as Polars Binary (UTF-8 JSON text). Binary values themselves never reach a snapshot: the
read paths turn them into base64 text. (A Polars extension type would say this better, but Polars 2.1 cannot
write one inside a struct to Parquet, as the diff does.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import polars as pl

_STRING_OR_SPACE = r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+'  # JSON whitespace outside strings is insignificant
_BARE_NON_FINITE = r"(?:^|[\[,:])-?(?:NaN|Infinity)(?:$|[\],}])"  # after compaction; confirmed by parsing


JSON = pl.Binary()


def is_json(dtype: pl.DataType) -> bool:
    """Whether a column holds warehouse-rendered JSON texts."""
    return dtype == JSON


def text_of(column: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
    """A JSON column's texts as strings."""
    return column.cast(pl.String)


def from_texts(texts: pl.Series) -> tuple[pl.Series, int]:
    """JSON texts as a JSON column, and how many held NaN or ±Infinity (not JSON), which become null.

    Whitespace outside strings is dropped (PostgreSQL writes `{"a": 1}`); numbers keep their text.
    """
    compact = texts.cast(pl.String).str.replace_all(_STRING_OR_SPACE, "${1}")
    suspects = compact.str.contains(_BARE_NON_FINITE).fill_null(False)
    fixed = 0
    if suspects.any():
        rows = suspects.arg_true()
        old = compact.gather(rows).to_list()
        new = [_without_non_finite(text) for text in old]
        fixed = sum(a != b for a, b in zip(old, new, strict=True))
        compact = compact.scatter(rows, pl.Series(new, dtype=pl.String))
    return compact.cast(JSON).alias(texts.name), fixed


class _Number:
    """A JSON number's text, written back as it was read."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _without_non_finite(text: str) -> str:
    """The JSON text with NaN and ±Infinity tokens as null; numbers keep their text."""
    try:
        value = json.loads(text, parse_float=_Number, parse_int=_Number, parse_constant=lambda _: None)
    except ValueError:
        return text  # not JSON with bare tokens after all (a string holding the word)
    return orjson.dumps(value, default=_fragment).decode()


def _fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, _Number):
        return orjson.Fragment(value.text)
    raise TypeError(type(value).__name__)
