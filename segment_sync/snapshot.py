"""Checks on a model snapshot before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import polars.selectors as cs

from segment_sync.encoding import column, key_strings
from segment_sync.spec import ModelSpec

SAMPLE_SIZE = 20


@dataclass(frozen=True)
class KeyProblems:
    """Null and duplicate primary keys in a snapshot, with a few sample keys."""

    null_rows: int
    duplicate_keys: int
    duplicate_samples: list[str]

    @property
    def ok(self) -> bool:
        return self.null_rows == 0 and self.duplicate_keys == 0


def missing_columns(snapshot: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns a model or sync needs that the snapshot does not have."""
    return [c for c in columns if c not in snapshot.columns]


def key_problems(snapshot: pl.DataFrame, key_columns: Sequence[str]) -> KeyProblems:
    """Count rows with a null key part and keys that appear more than once."""
    null_rows = snapshot.select(pl.any_horizontal(cs.by_name(key_columns).is_null()).sum()).item()
    keys = snapshot.select(key_strings(snapshot, key_columns).alias("key")).filter(pl.col("key").is_not_null())
    dupes = keys.group_by("key").len().filter(pl.col("len") > 1).sort("key")
    return KeyProblems(int(null_rows or 0), dupes.height, dupes["key"].head(SAMPLE_SIZE).to_list())


def drop_duplicate_keys(snapshot: pl.DataFrame, model: ModelSpec) -> tuple[pl.DataFrame, int, list[str]]:
    """Apply the model's keep_first/keep_last policy: the kept rows, how many were dropped and sample keys."""
    problems = key_problems(snapshot, model.key_columns)
    if model.on_duplicate_key == "fail" or problems.duplicate_keys == 0:
        return snapshot, 0, []
    keep = "first" if model.on_duplicate_key == "keep_first" else "last"
    complete, null_keys = split_null_keys(snapshot, model.key_columns)
    ordered = complete.with_row_index("_row").sort(column(model.order_by), pl.col("_row"), nulls_last=True)
    kept = ordered.unique(cs.by_name(model.key_columns), keep=keep, maintain_order=True).sort("_row").drop("_row")
    return pl.concat([kept, null_keys]), complete.height - kept.height, problems.duplicate_samples


def split_null_keys(snapshot: pl.DataFrame, key_columns: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows whose primary key is complete, and rows with a null key part (which can never be synced)."""
    has_null = pl.any_horizontal(cs.by_name(key_columns).is_null())
    return snapshot.filter(~has_null), snapshot.filter(has_null)
