"""The keyed diff: what changed in a model since a sync last delivered it.

Every row gets a 64-bit hash of its key and sent columns (made by the snapshot writer while the rows pass
through, or here for a snapshot without them); rows whose hash is found on one side only (the snapshot or
what was delivered) are the candidates, found by sorting the hashes of both sides together.
Only those rows are read again (by that hash, or by position), joined on the key and compared by their
canonical JSON, so a hash that moved without the content (a new Polars, a column type that encodes alike)
never sends an event. When the candidates are too many to hold (a mass change, or hashes made by another
Polars), both sides are split by a hash of the key into slices (temporary files), worked out one after another.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path

import msgspec
import polars as pl
from polars.io.plugins import register_io_source

from segment_sync.snapshot.row_hash import HASH_SEED, row_hash, stored_hash_name
from segment_sync.values.encoding import content_expr, key_strings, schema_of
from segment_sync.values.row_columns import (
    AFTER,
    BEFORE,
    BEFORE_GEN,
    CONTENT,
    DELIVERED_SCHEMA,
    DIFF_SCHEMA,
    GEN,
    HASH,
    KEY,
    KIND,
    ROW,
)

UNCHANGED = "unchanged"  # a row whose hash moved but whose content did not: only its stored hash is refreshed
_OLD_HASH, _SLICE = "_old_hash", "_slice"
SLICES_FOLDER_PREFIX = "segment-sync-diff-"  # a sliced diff's temporary folder; one left by a killed run is stale


def current_rows(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    *,
    keep: Sequence[str] = (),
    compared_columns: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """A snapshot as the diff sees it: the key as one string, the sent columns in a struct, the row hash.

    The sent columns are also kept under plain names (`_c0`, `_c1`, ... in order), for encoding: a model's
    own column names may clash with the diff's (`_key`) or read as patterns in a lazy plan (`*`, `^a$`).
    Columns named in `keep` (the diff's own, such as a row position) are passed through as they are. The hash
    covers the key and the `compared_columns` (all sent columns by default).
    """
    schema = schema_of(snapshot)
    renamed = {name: f"_s{i}" for i, name in enumerate(schema)}
    frame = snapshot.lazy().rename(renamed)
    keys = key_strings(frame, [renamed[c] for c in key_columns], names=key_columns).alias(KEY)
    sent = [pl.col(renamed[c]).alias(f"_c{i}") for i, c in enumerate(sent_columns)]
    kept = [pl.col(renamed[c]).alias(c) for c in keep]
    # the hash first and the struct after, so a filter on the hash runs before the struct is built
    compared = set(sent_columns if compared_columns is None else compared_columns)
    hashes = row_hash(pl.col(KEY), [pl.col(f"_c{i}") for i, c in enumerate(sent_columns) if c in compared])
    hashed = frame.select(*kept, keys, *sent).with_columns(hashes.alias(HASH))
    return hashed.with_columns(_row_struct(sent_columns))


def _sent_names(sent_columns: Sequence[str]) -> list[str]:
    return [f"_c{i}" for i in range(len(sent_columns))]


def _row_struct(sent_columns: Sequence[str]) -> pl.Expr:
    return pl.struct(_sent_names(sent_columns)).struct.rename_fields(list(sent_columns)).alias(ROW)


def _after_content(schema: Mapping[str, pl.DataType], sent_columns: Sequence[str]) -> pl.Expr:
    position = {name: i for i, name in enumerate(sent_columns)}
    return content_expr(schema, sent_columns, source=lambda name: pl.col(f"_c{position[name]}"))


def delivered_rows(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    gen: int,
    compared_columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """What a sync's state holds after delivering every row of a snapshot in generation `gen`."""
    schema = schema_of(snapshot)
    return (
        current_rows(snapshot, key_columns, sent_columns, compared_columns=compared_columns)
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
    both = pl.concat([new, old]).sort()  # eagerly: a lazy plan saves 0.1 CPU-s at 10M rows but holds 130 MB more
    alone = both.ne_missing(both.shift(1)).fill_null(True) & both.ne_missing(both.shift(-1)).fill_null(True)
    return both.filter(alone)


def compute_diff(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    delivered: pl.LazyFrame,
    *,
    trust_hashes: bool = True,
    in_memory_rows: int = 1_000_000,
    work_dir: Path | None = None,
    compared_columns: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """Rows added, changed, removed (or unchanged with a stale hash) between what was delivered and a snapshot.

    Only the `compared_columns` (all sent columns by default) make a row changed: a row whose other sent
    columns (its timestamp, its messageId column) alone changed is unchanged.

    The snapshot holds only rows with a complete primary key. With `trust_hashes` off (the stored hashes
    were made by another Polars or other column types), every row present on both sides is compared by
    content. At most about `in_memory_rows` candidate rows are held at once: beyond that, the keys are
    split into slices worked out one after another while the result is read, their rows kept in a temporary
    folder in `work_dir` (the system's temporary folder by default) until then. The snapshot's row hashes
    are read from its column named by `stored_hash_name` when the writer added it, and made here otherwise.
    """
    schema = schema_of(snapshot)
    compared = list(sent_columns if compared_columns is None else compared_columns)
    old_rows = delivered.select(pl.len()).collect().item()
    if old_rows == 0:  # a first run: every row is added
        current = current_rows(snapshot, key_columns, sent_columns, compared_columns=compared)
        return _all_added(current, schema, sent_columns, None)
    if not trust_hashes:
        rows = snapshot.lazy().select(pl.len()).collect().item() + old_rows
        slices = _slices(rows, in_memory_rows)
        return _in_slices(snapshot, key_columns, sent_columns, compared, delivered, slices, trust_hashes, work_dir)
    stored = stored_hash_name(schema, key_columns, compared)
    position = _unused_name(schema, "_position")
    positioned = snapshot.lazy().with_row_index(position)
    if stored in schema:  # hashed by the snapshot's writer
        hashed = snapshot.lazy().select(pl.col(stored).alias(HASH))
    else:
        hashed = current_rows(positioned, key_columns, sent_columns, keep=[position], compared_columns=compared)
        hashed = hashed.select(position, HASH)
    hashed = hashed.collect(engine="streaming")
    hashes = unmatched_row_hashes(hashed.lazy(), delivered)
    if hashes.len() > in_memory_rows:  # a mass change: every row is compared, slice by slice
        slices = _slices(hashed.height + old_rows, in_memory_rows)
        return _in_slices(snapshot, key_columns, sent_columns, compared, delivered, slices, trust_hashes, work_dir)
    # the usual few changes: those rows are read again, by their stored hash or else by position
    if stored in schema:
        rows = snapshot.lazy().filter(pl.col(stored).is_in(hashes.implode()))
    else:
        positions = hashed.filter(pl.col(HASH).is_in(hashes.implode()))[position].implode()
        rows = positioned.filter(pl.col(position).is_in(positions)).drop(position)
    del hashed
    news, olds, tombstones = pl.collect_all(
        [
            current_rows(rows, key_columns, sent_columns, compared_columns=compared),
            delivered.filter(pl.col(HASH).is_in(hashes.implode())).select(list(DELIVERED_SCHEMA)),
            delivered.filter(pl.col(HASH).is_null()).select(list(DELIVERED_SCHEMA)),  # keys only read for these
        ],
        engine="streaming",
    )
    olds = pl.concat([olds, tombstones.filter(pl.col(KEY).is_in(news[KEY].implode()))])
    return changes_between(news, olds, schema, sent_columns, compared, trust_hashes=True).lazy()


def _in_slices(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    compared_columns: Sequence[str],
    delivered: pl.LazyFrame,
    slices: int,
    trust_hashes: bool,
    work_dir: Path | None,
) -> pl.LazyFrame:
    """The diff worked out for one slice of the keys at a time (by a hash of the key), as it is read.

    Both sides are first split by slice into temporary files, one pass each, so each slice reads only its rows.
    """
    schema = schema_of(snapshot)
    current = current_rows(snapshot, key_columns, sent_columns, compared_columns=compared_columns)
    current = current.drop(ROW)  # rebuilt per slice: not written twice

    def slice_diffs() -> Iterator[pl.DataFrame]:
        with tempfile.TemporaryDirectory(prefix=SLICES_FOLDER_PREFIX, dir=work_dir) as folder:
            news = _split_by_key(current, slices, Path(folder, "new"))
            olds = _split_by_key(delivered.select(list(DELIVERED_SCHEMA)), slices, Path(folder, "old"))
            for i in range(slices):
                part_news = news(i).with_columns(_row_struct(sent_columns))
                yield changes_between(
                    part_news, olds(i), schema, sent_columns, compared_columns, trust_hashes=trust_hashes
                )

    def read(
        columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _: int | None
    ) -> Iterator[pl.DataFrame]:
        with closing(slice_diffs()) as parts:
            for part in parts:
                part = part if predicate is None else part.filter(predicate)
                part = part if columns is None else part.select(columns)
                if n_rows is not None:
                    part = part.head(n_rows)
                    n_rows -= part.height
                yield part
                if n_rows == 0:
                    return

    return register_io_source(read, schema={**DIFF_SCHEMA, ROW: _row_dtype(schema, sent_columns)})


def _split_by_key(frame: pl.LazyFrame, slices: int, folder: Path) -> Callable[[int], pl.DataFrame]:
    """Write a frame's rows into one file per slice of `KEY` (in one streaming pass); return a reader of a slice."""
    if slices == 1:
        return lambda _: frame.collect(engine="streaming")
    schema = frame.collect_schema()
    slice_of = pl.col(KEY).hash(HASH_SEED) % slices
    # small files: Polars buffers each open file's rows, 1.25 GB at 10M rows by default and 0.8 GB this way
    partition = pl.PartitionBy(
        folder, key=slice_of.alias(_SLICE), include_key=False, approximate_bytes_per_file=4_000_000
    )
    frame.sink_parquet(partition, compression="lz4", mkdir=True, engine="streaming")

    def read_slice(i: int) -> pl.DataFrame:
        files = sorted(folder.glob(f"{_SLICE}={i}/*.parquet"))
        return pl.read_parquet(files, hive_partitioning=False) if files else pl.DataFrame(schema=schema)

    return read_slice


def _slices(rows: int, in_memory_rows: int) -> int:
    return max(1, -(-rows // max(1, in_memory_rows)))


def changes_between(
    news: pl.DataFrame,
    olds: pl.DataFrame,
    schema: Mapping[str, pl.DataType],
    sent_columns: Sequence[str],
    compared_columns: Sequence[str],
    *,
    trust_hashes: bool,
) -> pl.DataFrame:
    """The diff of rows held in memory: `current_rows` of the snapshot, and delivered rows.

    Rows are encoded as JSON only once they are found to be added or to have a hash that differs; a changed row
    whose compared columns hold what was delivered is unchanged.
    """
    joined = news.join(
        olds.select(KEY, pl.col(GEN).alias(BEFORE_GEN), pl.col(CONTENT).alias(BEFORE), pl.col(HASH).alias(_OLD_HASH)),
        on=KEY,
        how="full",
        coalesce=True,
        maintain_order="left",  # the snapshot's order, then the removed rows: repeatable without a sort
    )
    new, old = pl.col(HASH), pl.col(_OLD_HASH)
    differs = (new != old) if trust_hashes else pl.lit(True)
    kind = (
        pl.when(new.is_not_null() & old.is_null())
        .then(pl.lit("added"))
        .when(new.is_null() & old.is_not_null())
        .then(pl.lit("removed"))
        .when(new.is_not_null() & differs)
        .then(pl.lit("changed"))
    )
    after = pl.when(new.is_not_null()).then(_after_content(schema, sent_columns)).alias(AFTER)
    same = pl.col(AFTER) == pl.col(BEFORE)
    if list(compared_columns) != list(sent_columns):
        compared = [_compared_part(pl.col(side), compared_columns) for side in (AFTER, BEFORE)]
        same = same | (compared[0] == compared[1])
    unchanged = (pl.col(KIND) == "changed") & same
    return (
        joined.with_columns(kind.alias(KIND))
        .filter(pl.col(KIND).is_not_null())
        .with_columns(after)
        .with_columns(pl.when(unchanged).then(pl.lit(UNCHANGED)).otherwise(pl.col(KIND)).alias(KIND))
        .select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER, HASH, ROW)
    )


def _unused_name(schema: Mapping[str, pl.DataType], name: str) -> str:
    """`name`, or `name` with underscores added until no column of the schema has it."""
    while name in schema:
        name += "_"
    return name


def _compared_part(contents: pl.Expr, columns: Sequence[str]) -> pl.Expr:
    """The members of each content that are compared, as one JSON text (read by msgspec, values as they stand)."""
    names = list(columns)

    def part(texts: pl.Series) -> pl.Series:
        out = []
        for text in texts.to_list():
            if text is None:
                out.append(None)
                continue
            values = msgspec.json.decode(text, type=dict[str, msgspec.Raw])
            out.append(b"\x1f".join(bytes(values.get(name, b"")) for name in names).decode())
        return pl.Series(out, dtype=pl.String)

    return contents.map_batches(part, return_dtype=pl.String, is_elementwise=True)


def resync_diff(
    snapshot: pl.DataFrame | pl.LazyFrame,
    key_columns: Sequence[str],
    sent_columns: Sequence[str],
    generation: int,
    compared_columns: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """Every current row as added, for a full resync; the generation makes its messageIds new."""
    current = current_rows(snapshot, key_columns, sent_columns, compared_columns=compared_columns)
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
