"""Checks on a model snapshot before anything is sent; they run lazily, so a snapshot file need not fit in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import polars as pl
import polars.selectors as cs

from segment_sync.spec import ModelSpec
from segment_sync.values.encoding import column, key_strings

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

SAMPLE_SIZE = 20
_KEY_HASH_SEED = 0x6B65_7973
ROW = "_snapshot_row"


@dataclass(frozen=True)
class KeyProblems:
    """Null and duplicate primary keys in a snapshot, with a few sample keys."""

    null_rows: int
    duplicate_keys: int
    duplicate_samples: list[str]

    @property
    def ok(self) -> bool:
        return self.null_rows == 0 and self.duplicate_keys == 0


def missing_columns(snapshot: pl.DataFrame | pl.LazyFrame, columns: Sequence[str]) -> list[str]:
    """Columns a model or sync needs that the snapshot does not have."""
    present = set(snapshot.lazy().collect_schema().names())
    return [c for c in columns if c not in present]


def key_problems(snapshot: pl.DataFrame | pl.LazyFrame, key_columns: Sequence[str]) -> KeyProblems:
    """Count rows with a null key part and keys that appear more than once."""
    rows = snapshot.lazy()
    shape = pl.DataFrame(schema=rows.collect_schema())  # key_strings reads only the schema
    null_rows = rows.select(_has_null_key(key_columns).sum())
    keys = rows.select(key_strings(shape, key_columns).alias("key")).filter(pl.col("key").is_not_null())
    # Grouping 64-bit hashes is about 2.5x faster than grouping the key strings; only keys whose hash repeats are
    # then compared as strings.
    hashed = pl.col("key").hash(_KEY_HASH_SEED)
    repeated = keys.group_by(hashed.alias("_hash")).len().filter(pl.col("len") > 1).select("_hash")
    nulls, suspects = pl.collect_all([null_rows, repeated], engine="streaming")
    count, samples = 0, []
    if suspects.height:
        suspect_keys = keys.filter(hashed.is_in(suspects["_hash"].implode()))
        dupes = suspect_keys.group_by("key").len().filter(pl.col("len") > 1).select("key").collect(engine="streaming")
        count, samples = dupes.height, dupes.sort("key").head(SAMPLE_SIZE)["key"].to_list()
    return KeyProblems(int(nulls.item() or 0), count, samples)


def rows_to_drop(snapshot: pl.DataFrame | pl.LazyFrame, model: ModelSpec) -> pl.Series:
    """Row numbers that the model's keep_first/keep_last policy drops: all but one row of each duplicated key.

    Rows are ordered by order_by (nulls last), then by position; only the duplicated keys' rows are held in memory.
    """
    keep = "first" if model.on_duplicate_key == "keep_first" else "last"
    keys = cs.by_name(model.key_columns)
    complete = snapshot.lazy().with_row_index(ROW).filter(~_has_null_key(model.key_columns))
    duplicated = complete.group_by(keys).len().filter(pl.col("len") > 1).drop("len")
    candidates = complete.join(duplicated, on=model.key_columns, how="semi", nulls_equal=True)
    rows = candidates.select(keys, column(model.order_by or ROW).alias("_order"), ROW).collect(engine="streaming")
    ordered = rows.sort("_order", ROW, nulls_last=True)
    kept = ordered.unique(keys, keep=keep, maintain_order=True)
    return rows.filter(~pl.col(ROW).is_in(kept[ROW].implode()))[ROW]


def split_null_keys(snapshot: Frame, key_columns: Sequence[str]) -> tuple[Frame, Frame]:
    """Rows whose primary key is complete, and rows with a null key part (which can never be synced)."""
    has_null = _has_null_key(key_columns)
    return snapshot.filter(~has_null), snapshot.filter(has_null)


def _has_null_key(key_columns: Sequence[str]) -> pl.Expr:
    return pl.any_horizontal(cs.by_name(key_columns).is_null())
