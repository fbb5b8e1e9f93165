"""A model's snapshot file: batches streamed to Parquet as they arrive, keys checked lazily, replaced atomically."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import polars.selectors as cs
from polars.io.plugins import register_io_source

from segment_sync.snapshot.key_checks import ROW, KeyProblems, key_problems, missing_columns, rows_to_drop
from segment_sync.snapshot.row_hash import STORED_HASH_PREFIX, model_columns, with_row_hashes
from segment_sync.spec import ModelSpec
from segment_sync.storage import durable_file
from segment_sync.storage.state import COMPRESSION


class SnapshotError(ValueError):
    """The model's rows cannot become a snapshot (e.g. its key column is missing); the old snapshot stays."""


@dataclass(frozen=True)
class SnapshotSummary:
    """What was written: row count, key problems left after the duplicate policy, and what the policy dropped."""

    rows: int
    problems: KeyProblems
    dropped_rows: int
    dropped_samples: list[str]


def write_snapshot(
    frames: Iterable[pl.DataFrame],
    path: Path,
    model: ModelSpec,
    hashed_columns: Sequence[Sequence[str]] = (),
    *,
    one_schema: bool = False,
) -> SnapshotSummary:
    """Write batches to the model's snapshot file, applying its duplicate-key policy, never holding all rows.

    Each set of `hashed_columns` (the columns a sync of the model sends) gets a column of row hashes, made
    while the rows pass through, so the sync's diff need not read and hash every row again. With `one_schema`
    (every batch has the first one's schema) the batches stream straight into Parquet.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as work:
        folder = Path(work)
        target = folder / "read.parquet"
        if one_schema:
            rows = _stream_parquet(iter(frames), target, model, hashed_columns)
        else:
            rows = _write_parquet(frames, folder, target, model, hashed_columns)
        snapshot = pl.scan_parquet(folder / "read.parquet")
        missing = missing_columns(snapshot, model.needed_columns)
        if missing:
            raise SnapshotError(
                f"model {model.name!r}: the query returns no column {missing}; the model's primary_key "
                "(and order_by, with keep_first/keep_last) must name columns the query returns"
            )
        problems = key_problems(snapshot, model.key_columns)
        if model.on_duplicate_key == "fail" or problems.duplicate_keys == 0:
            durable_file.replace(folder / "read.parquet", path)
            return SnapshotSummary(rows, problems, 0, [])
        dropped = rows_to_drop(snapshot, model)
        kept = snapshot.with_row_index(ROW).filter(~pl.col(ROW).is_in(dropped.implode())).drop(ROW)
        kept.sink_parquet(folder / "kept.parquet", compression=COMPRESSION)
        durable_file.replace(folder / "kept.parquet", path)
        return SnapshotSummary(
            rows - dropped.len(), KeyProblems(problems.null_rows, 0, []), dropped.len(), problems.duplicate_samples
        )


def scan_snapshot(path: Path) -> pl.LazyFrame:
    """A snapshot file's rows with the model's columns only (not the row hashes kept for the diff)."""
    scan = pl.scan_parquet(path)
    return scan.select(cs.by_name(model_columns(scan.collect_schema())))


def _stream_parquet(
    frames: Iterator[pl.DataFrame], target: Path, model: ModelSpec, hashed_columns: Sequence[Sequence[str]]
) -> int:
    """Stream batches of one schema through the row hashing into one Parquet file, with no copy on disk first."""
    first = next(frames)
    _check_reserved(first, model)
    schema, rows = first.schema, 0
    frames = _put_back(first, frames)
    del first  # only the generator holds it, and lets it go once it is written

    def source(
        columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        nonlocal rows
        for frame in frames:
            rows += frame.height
            yield frame if columns is None else frame.select(columns)

    batches = register_io_source(source, schema=schema)
    with_row_hashes(batches, model.key_columns, hashed_columns).sink_parquet(target, compression=COMPRESSION)
    return rows


def _put_back(first: pl.DataFrame, rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    yield first
    del first
    yield from rest


def _check_reserved(frame: pl.DataFrame, model: ModelSpec) -> None:
    reserved = [c for c in frame.columns if c.startswith(STORED_HASH_PREFIX)]
    if reserved:
        raise SnapshotError(
            f"model {model.name!r}: column {reserved[0]!r} starts with {STORED_HASH_PREFIX!r}, which "
            "segment-sync keeps for its row hashes; rename it in the model's query"
        )


def _write_parquet(
    frames: Iterable[pl.DataFrame],
    folder: Path,
    target: Path,
    model: ModelSpec,
    hashed_columns: Sequence[Sequence[str]],
) -> int:
    """Spill each batch to an Arrow IPC file, then stream them into one Parquet file under a common schema."""
    parts, rows = [], 0
    for i, frame in enumerate(frames):
        _check_reserved(frame, model)
        part = folder / f"batch-{i:06d}.arrow"
        frame.write_ipc(part, compression="lz4")
        parts.append(part)
        rows += frame.height
    # SQLAlchemy infers each batch's dtypes, so a column may be Null in one batch and String in the next.
    rows_read = pl.concat([pl.scan_ipc(p) for p in parts], how="vertical_relaxed")
    with_row_hashes(rows_read, model.key_columns, hashed_columns).sink_parquet(target, compression=COMPRESSION)
    for part in parts:
        part.unlink()
    return rows
