"""The keyed diff: what changed in a model since a sync last delivered it."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from segment_sync.encoding import content_column, key_strings

KEY, CONTENT, GEN = "_key", "_content", "_gen"
KIND, BEFORE, AFTER, BEFORE_GEN = "_kind", "_before", "_after", "_before_gen"

DELIVERED_SCHEMA = {KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64}
DIFF_SCHEMA = {KEY: pl.String, KIND: pl.String, BEFORE_GEN: pl.Int64, BEFORE: pl.String, AFTER: pl.String}


def current_contents(snapshot: pl.DataFrame, key_columns: Sequence[str], sent_columns: Sequence[str]) -> pl.DataFrame:
    """Each row's key and the canonical JSON of the columns a sync sends."""
    keys = snapshot.select(key_strings(snapshot, key_columns).alias(KEY)).to_series()
    return pl.DataFrame({KEY: keys, CONTENT: content_column(snapshot, sent_columns).alias(CONTENT)})


def compute_diff(current: pl.DataFrame, delivered: pl.LazyFrame) -> pl.DataFrame:
    """Rows added, changed or removed between what was delivered and the current contents.

    `delivered` holds the last acknowledged content per key; a null content is a removed row kept as a
    tombstone, so a key that comes back is `added` again with a new messageId.
    """
    joined = current.lazy().join(
        delivered.select(KEY, pl.col(CONTENT).alias(BEFORE), pl.col(GEN).alias(BEFORE_GEN)),
        on=KEY,
        how="full",
        coalesce=True,
    )
    after, before = pl.col(CONTENT), pl.col(BEFORE)
    kind = (
        pl.when(after.is_not_null() & before.is_null())
        .then(pl.lit("added"))
        .when(after.is_null() & before.is_not_null())
        .then(pl.lit("removed"))
        .when(after.is_not_null() & (after != before))
        .then(pl.lit("changed"))
    )
    return (
        joined.with_columns(kind.alias(KIND))
        .filter(pl.col(KIND).is_not_null())
        .select(KEY, KIND, BEFORE_GEN, BEFORE, after.alias(AFTER))
        .sort(KEY)
        .collect()
        .cast(DIFF_SCHEMA)  # type: ignore[arg-type]
    )


def count_kinds(diff: pl.DataFrame) -> dict[str, int]:
    """Added, changed and removed row counts."""
    counts = dict(diff.group_by(KIND).len().iter_rows())
    return {kind: int(counts.get(kind, 0)) for kind in ("added", "changed", "removed")}


def resync_diff(current: pl.DataFrame, generation: int) -> pl.DataFrame:
    """Every current row as added, for a full resync; the generation makes its messageIds new."""
    return current.select(
        KEY,
        pl.lit("added").alias(KIND),
        pl.lit(generation, pl.Int64).alias(BEFORE_GEN),
        pl.lit(None, pl.String).alias(BEFORE),
        pl.col(CONTENT).alias(AFTER),
    ).sort(KEY)
