"""What changed events say changed, by columns: `change_description.change_members`, byte for byte, as JSON text.

The contents before and after are decoded in one call each; each compared field's JSON text on either side
becomes a column (a template's is rendered per row), and the list and the previous values are put together
by Polars expressions.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import orjson
import polars as pl

from segment_sync.events.change_description import compared_fields, field_text, position_tree
from segment_sync.field_mapping import Column, FieldMapping, Tree
from segment_sync.spec import SyncSpec

_CONTENTS = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])


def change_members_column(sync: SyncSpec, befores: pl.Series, afters: pl.Series) -> pl.Series:
    """For each change (contents last sent, contents now), the JSON members that describe it, without braces."""
    fields = compared_fields(sync)
    olds, news = _decoded(befores.to_list()), _decoded(afters.to_list())
    texts = {f"{side}{i}": _texts(m, rows) for side, rows in (("o", olds), ("n", news)) for i, m in enumerate(fields)}
    height = pl.Series("height", [None] * len(olds), dtype=pl.Null)  # the frame's height when no field can change
    frame = pl.DataFrame([height, *(pl.Series(name, values, dtype=pl.Binary) for name, values in texts.items())])
    moved = [pl.col(f"o{i}").ne_missing(pl.col(f"n{i}")) for i in range(len(fields))]
    parts: list[pl.Expr] = []
    if sync.changed_fields is not None:
        names = [pl.when(changed).then(pl.lit(_json(m.name))) for m, changed in zip(fields, moved, strict=True)]
        parts.append(pl.concat_str([pl.lit(_json(sync.changed_fields) + ":["), _joined(names), pl.lit("]")]))
    if sync.previous_values is not None:
        label = pl.lit(_json(sync.previous_values) + ":")
        parts.append(pl.concat_str([label, _previous(position_tree(fields), moved)]))
    return frame.select(pl.concat_str(parts, separator=",")).to_series()


def _json(text: str) -> str:
    return orjson.dumps(text).decode()


def _decoded(contents: Sequence[str | None]) -> list[dict[str, msgspec.Raw]]:
    return _CONTENTS.decode(("[" + ",".join(c or "{}" for c in contents) + "]").encode())


def _texts(mapping: FieldMapping, contents: list[dict[str, msgspec.Raw]]) -> list[bytes | None]:
    """`field_text` of a field in each content."""
    source = mapping.source
    if isinstance(source, Column):
        name = source.name
        return [None if (raw := values.get(name)) is None else bytes(raw) for values in contents]
    return [field_text(mapping, {k: bytes(v) for k, v in values.items()}) for values in contents]


def _joined(members: list[pl.Expr]) -> pl.Expr:
    if not members:
        return pl.lit("")
    return pl.concat_str(members, separator=",", ignore_nulls=True).fill_null("")


def _previous(tree: Tree, moved: list[pl.Expr]) -> pl.Expr:
    """The previous values of the fields that moved, nested as the properties are (`change_description._previous`)."""
    members = []
    for key, node in tree.items():
        label = pl.lit(_json(key) + ":")
        if isinstance(node, dict):
            inner = _previous(node, moved)
            members.append(pl.when(inner != "{}").then(pl.concat_str([label, inner])))
        else:
            i = int(node.name)  # type: ignore[union-attr]
            old = pl.col(f"o{i}").cast(pl.String).fill_null("null")
            members.append(pl.when(moved[i]).then(pl.concat_str([label, old])))
    return pl.concat_str([pl.lit("{"), _joined(members), pl.lit("}")])
