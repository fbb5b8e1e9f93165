"""Checks on a model snapshot before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from segment_sync.encoding import key_strings

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
    null_rows = snapshot.select(pl.any_horizontal(pl.col(key_columns).is_null()).sum()).item()
    keys = snapshot.select(key_strings(snapshot, key_columns).alias("key")).filter(pl.col("key").is_not_null())
    dupes = keys.group_by("key").len().filter(pl.col("len") > 1).sort("key")
    return KeyProblems(int(null_rows or 0), dupes.height, dupes["key"].head(SAMPLE_SIZE).to_list())
