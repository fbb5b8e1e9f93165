"""Row hashes: a 64-bit hash of each row's key and sent columns, made once by the snapshot writer for the diff."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping, Sequence
from functools import reduce

import polars as pl

from segment_sync.values.encoding import column, key_strings

HASH_SEED = 0x5E6D_5EED
HASH_SCHEME = "xor-of-columns"  # part of the hash basis: changing how rows are hashed makes stored hashes untrusted
STORED_HASH_PREFIX = "__segment_sync_hash_"  # a snapshot column of row hashes (see `with_row_hashes`)


def row_hash(key: pl.Expr, values: Sequence[pl.Expr]) -> pl.Expr:
    """A 64-bit hash of a row's key string and sent values (stable within one Polars version and column types).

    Each column is hashed with a seed of its own and the hashes are XORed: three times cheaper than
    hashing them as one struct, and a value moved to another column still changes the hash.
    """
    return reduce(operator.xor, [e.hash(HASH_SEED + i) for i, e in enumerate([key, *values])])


def hash_basis(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> str:
    """What row hashes depend on besides the values: Polars' version and the sent columns' types."""
    parts = [pl.__version__, str(HASH_SEED), HASH_SCHEME, *(f"{c}:{schema[c]}" for c in sent_columns)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def stored_hash_name(schema: Mapping[str, pl.DataType], key_columns: Sequence[str], sent_columns: Sequence[str]) -> str:
    """The snapshot column holding a sync's row hashes, named after everything the hashes depend on."""
    parts = [hash_basis(schema, sent_columns), *(f"{c}:{schema[c]}" for c in key_columns)]
    return STORED_HASH_PREFIX + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def with_row_hashes(
    snapshot: pl.LazyFrame, key_columns: Sequence[str], column_sets: Sequence[Sequence[str]]
) -> pl.LazyFrame:
    """A snapshot with a column of row hashes for each set of sent columns, the same as the diff would make.

    The snapshot writer adds them while the rows pass through, so a diff reads one column instead of hashing
    every row again. A set naming a column the snapshot lacks gets none (the diff then reports the column).
    """
    schema = snapshot.collect_schema()
    if any(c not in schema for c in key_columns):
        return snapshot
    key = key_strings(snapshot, key_columns)
    hashes = {
        stored_hash_name(schema, key_columns, sent): row_hash(key, [column(c) for c in sent])
        for sent in column_sets
        if all(c in schema for c in sent)
    }
    return snapshot.with_columns(expr.alias(name) for name, expr in hashes.items())


def model_columns(schema: Mapping[str, pl.DataType]) -> list[str]:
    """A snapshot's own columns: the model's, without the row hashes the writer added."""
    return [c for c in schema if not c.startswith(STORED_HASH_PREFIX)]
