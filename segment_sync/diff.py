"""The keyed diff: what changed in a model since a sync last delivered it.

Every row gets a 64-bit hash of its key and sent columns; rows whose hash is found on one side only (the
snapshot or what was delivered) are the candidates, found holding one integer a row. Only those rows are
read in full, joined on the key and compared by their canonical JSON, so a hash that moved without the
content (a new Polars, a column type that encodes alike) never sends an event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import polars as pl

from segment_sync.encoding import content_expr, key_strings, schema_of

KEY, CONTENT, GEN, HASH, ROW = "_key", "_content", "_gen", "_hash", "_row"
KIND, BEFORE, AFTER, BEFORE_GEN = "_kind", "_before", "_after", "_before_gen"
UNCHANGED = "unchanged"  # a row whose hash moved but whose content did not: only its stored hash is refreshed
_OLD_HASH, _MAYBE = "_old_hash", "maybe"
HASH_SEED = 0x5E6D_5EED

DELIVERED_SCHEMA = {KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64, HASH: pl.UInt64}
DIFF_SCHEMA = {
    KEY: pl.String,
    KIND: pl.String,
    BEFORE_GEN: pl.Int64,
    BEFORE: pl.String,
    AFTER: pl.String,
    HASH: pl.UInt64,
}


def _row_hash(sent_columns: Sequence[str]) -> pl.Expr:
    """A 64-bit hash of a row's key and sent values (stable within one Polars version and column types)."""
    return pl.struct(KEY, *_sent_names(sent_columns)).hash(HASH_SEED)


def hash_basis(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> str:
    """What row hashes depend on besides the values: Polars' version and the sent columns' types."""
    parts = [pl.__version__, str(HASH_SEED), *(f"{c}:{schema[c]}" for c in sent_columns)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def current_rows(
    snapshot: pl.DataFrame | pl.LazyFrame, key_columns: Sequence[str], sent_columns: Sequence[str]
) -> pl.LazyFrame:
    """A snapshot as the diff sees it: the key as one string, the sent columns in a struct, the row hash.

    The sent columns are also kept under plain names (`_c0`, `_c1`, ... in order), for encoding: a model's
    own column names may clash with the diff's (`_key`) or read as patterns in a lazy plan (`*`, `^a$`).
    """
    schema = schema_of(snapshot)
    renamed = {name: f"_s{i}" for i, name in enumerate(schema)}
    frame = snapshot.lazy().rename(renamed)
    keys = key_strings(frame, [renamed[c] for c in key_columns], names=key_columns).alias(KEY)
    sent = [pl.col(renamed[c]).alias(f"_c{i}") for i, c in enumerate(sent_columns)]
    values = pl.struct(_sent_names(sent_columns)).struct.rename_fields(list(sent_columns)).alias(ROW)
    # the hash first and the struct after, so a filter on the hash runs before the struct is built
    return frame.select(keys, *sent).with_columns(_row_hash(sent_columns).alias(HASH)).with_columns(values)


def _sent_names(sent_columns: Sequence[str]) -> list[str]:
    return [f"_c{i}" for i in range(len(sent_columns))]


def _after_content(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> pl.Expr:
    position = {name: i for i, name in enumerate(sent_columns)}
    return content_expr(schema, sent_columns, source=lambda name: pl.col(f"_c{position[name]}"))


def delivered_rows(
    snapshot: pl.DataFrame | pl.LazyFrame, key_columns: Sequence[str], sent_columns: Sequence[str], gen: int
) -> pl.DataFrame:
    """What a sync's state holds after delivering every row of a snapshot in generation `gen`."""
    schema = schema_of(snapshot)
    return (
        current_rows(snapshot, key_columns, sent_columns)
        .select(KEY, _after_content(schema, sent_columns).alias(CONTENT), pl.lit(gen, pl.Int64).alias(GEN), HASH)
        .collect()
    )


def current_contents(snapshot: pl.DataFrame, key_columns: Sequence[str], sent_columns: Sequence[str]) -> pl.DataFrame:
    """Each row's key and the canonical JSON of the columns a sync sends."""
    contents = _after_content(snapshot.schema, sent_columns).alias(CONTENT)
    return current_rows(snapshot, key_columns, sent_columns).select(KEY, contents).collect()


def unmatched_row_hashes(current: pl.LazyFrame, delivered: pl.LazyFrame) -> pl.Series:
    """Row hashes found on one side only: the rows that may have been added, removed or changed.

    A row hash covers the key and the sent values, so an unchanged row has the same hash on both sides.
    Only one 64-bit integer a row is held, and the two sides are compared by sorting them together;
    a hash collision can only hide a change with odds of about 2^-64 per changed row.
    """
    new = current.select(HASH).collect(engine="streaming")[HASH]
    old = delivered.select(HASH).filter(pl.col(HASH).is_not_null()).collect(engine="streaming")[HASH]
    both = pl.concat([new, old]).sort()
    alone = both.ne_missing(both.shift(1)).fill_null(True) & both.ne_missing(both.shift(-1)).fill_null(True)
    return both.filter(alone)


def diff_candidates(current: pl.LazyFrame, delivered: pl.LazyFrame, *, trust_hashes: bool = True) -> pl.DataFrame:
    """Keys added, removed or maybe changed, by exact key (sorted by key); meant for the few changed keys.

    A delivered row with a null hash is a tombstone (removed and kept, so a key that comes back is added
    with a new messageId). With `trust_hashes` off (the hashes were made by another Polars or other column
    types), every row present on both sides is a candidate and only the contents decide.
    """
    joined = current.select(KEY, HASH).join(
        delivered.select(KEY, pl.col(HASH).alias(_OLD_HASH)), on=KEY, how="full", coalesce=True
    )
    new, old = pl.col(HASH), pl.col(_OLD_HASH)
    differs = (new != old) if trust_hashes else pl.lit(True)
    kind = (
        pl.when(new.is_not_null() & old.is_null())
        .then(pl.lit("added"))
        .when(new.is_null() & old.is_not_null())
        .then(pl.lit("removed"))
        .when(new.is_not_null() & differs)
        .then(pl.lit(_MAYBE))
    )
    found = joined.with_columns(kind.alias(KIND)).filter(pl.col(KIND).is_not_null())
    return found.select(KEY, KIND, HASH).sort(KEY).collect(engine="streaming")


def diff_rows(
    current: pl.LazyFrame,
    schema: Mapping[str, pl.DataType],
    sent_columns: Sequence[str],
    delivered: pl.LazyFrame,
    candidates: pl.DataFrame,
) -> pl.LazyFrame:
    """The diff's rows for the candidate keys: contents before and after, and the sent columns typed in `_row`.

    `current` is the snapshot's `current_rows`; `schema` its column types. Kinds come out as added,
    changed, removed, or `unchanged` for a row whose hash differs but whose content does not.
    """
    keys = candidates[KEY].implode()
    olds = delivered.filter(pl.col(KEY).is_in(keys)).select(
        KEY, pl.col(GEN).alias(BEFORE_GEN), pl.col(CONTENT).alias(BEFORE)
    )
    after = (
        current.filter(pl.col(KEY).is_in(keys))
        .join(candidates.lazy().filter(pl.col(KIND) != "removed").drop(HASH), on=KEY, how="inner")
        .join(olds, on=KEY, how="left")
        .select(
            KEY,
            KIND,
            BEFORE_GEN,
            BEFORE,
            _after_content(schema, sent_columns).alias(AFTER),
            HASH,
            ROW,
        )
        .with_columns(
            pl.when(pl.col(KIND) != _MAYBE)
            .then(pl.col(KIND))
            .when(pl.col(AFTER) == pl.col(BEFORE))
            .then(pl.lit(UNCHANGED))
            .otherwise(pl.lit("changed"))
            .alias(KIND)
        )
    )
    removed = (
        candidates.lazy()
        .filter(pl.col(KIND) == "removed")
        .join(olds, on=KEY, how="inner")
        .select(
            KEY,
            KIND,
            BEFORE_GEN,
            BEFORE,
            pl.lit(None, pl.String).alias(AFTER),
            pl.lit(None, pl.UInt64).alias(HASH),
            pl.lit(None, _row_dtype(schema, sent_columns)).alias(ROW),
        )
    )
    return pl.concat([after, removed])


def compute_diff(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    delivered: pl.LazyFrame,
    *,
    trust_hashes: bool = True,
    in_memory_rows: int = 1_000_000,
) -> pl.LazyFrame:
    """Rows added, changed, removed (or unchanged with a stale hash) between what was delivered and a snapshot.

    The snapshot holds only rows with a complete primary key. Candidates are found eagerly (keys and hashes
    only); the rows with their contents come out lazily, to be sunk to a file or collected. Up to
    `in_memory_rows` candidate rows are held in memory; more are streamed from the files.
    """
    schema = schema_of(snapshot)
    current = current_rows(snapshot, key_columns, sent_columns)
    if delivered.select(pl.len()).collect().item() == 0:  # a first run: every row is added
        return _all_added(current, schema, sent_columns, None)
    if trust_hashes:
        hashes = unmatched_row_hashes(current, delivered).implode()
        small = hashes.list.len().item() <= in_memory_rows
        current = current.filter(pl.col(HASH).is_in(hashes))
        if small:  # the usual few changes: read those rows once, then work in memory
            current = current.collect(engine="streaming").lazy()
        # a tombstone has no hash: fetched by key, as its generation makes a returning key's messageId new
        returning = pl.col(KEY).is_in(current.select(KEY).collect(engine="streaming")[KEY].implode())
        changed = delivered.filter(pl.col(HASH).is_in(hashes))
        delivered = pl.concat([changed, delivered.filter(pl.col(HASH).is_null()).filter(returning)])
        if small:
            delivered = delivered.collect(engine="streaming").lazy()
            candidates = diff_candidates(current, delivered)
            return diff_rows(current, schema, sent_columns, delivered, candidates).collect().lazy()
    candidates = diff_candidates(current, delivered, trust_hashes=trust_hashes)
    return diff_rows(current, schema, sent_columns, delivered, candidates)


def resync_diff(
    snapshot: pl.DataFrame | pl.LazyFrame, key_columns: Sequence[str], sent_columns: Sequence[str], generation: int
) -> pl.LazyFrame:
    """Every current row as added, for a full resync; the generation makes its messageIds new."""
    current = current_rows(snapshot, key_columns, sent_columns)
    return _all_added(current, schema_of(snapshot), sent_columns, generation)


def _all_added(
    current: pl.LazyFrame, schema: Mapping[str, pl.DataType], sent_columns: Sequence[str], generation: int | None
) -> pl.LazyFrame:
    return current.select(
        KEY,
        pl.lit("added").alias(KIND),
        pl.lit(generation, pl.Int64).alias(BEFORE_GEN),
        pl.lit(None, pl.String).alias(BEFORE),
        _after_content(schema, sent_columns).alias(AFTER),
        HASH,
        ROW,
    )


def empty_diff(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> pl.DataFrame:
    """A diff with no rows."""
    return pl.DataFrame(schema={**DIFF_SCHEMA, ROW: _row_dtype(schema, sent_columns)})


def count_kinds(diff: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    """Added, changed and removed row counts."""
    counts = dict(diff.lazy().group_by(KIND).len().collect().iter_rows())
    return {kind: int(counts.get(kind, 0)) for kind in ("added", "changed", "removed")}


def _row_dtype(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> pl.Struct:
    return pl.Struct({c: schema[c] for c in sent_columns})
