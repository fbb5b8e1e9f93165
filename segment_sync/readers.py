"""Reading a model into Polars batches: a dialect's fast path where it has one, else SQLAlchemy."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from segment_sync import duckdb_reader, postgres_reader
from segment_sync.spec import ModelSpec
from segment_sync.warehouse import ReadPath, dialect_of, sqlalchemy_batches, unusable_url

DEFAULT_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class ModelBatches:
    """A model's rows as Polars frames, and the read path producing them: duckdb_arrow, postgres_copy or sqlalchemy.

    The fast paths give every batch the same schema; SQLAlchemy infers each batch's dtypes on its own, so a
    column can be Null in one batch and String in the next (combine them with how="vertical_relaxed").
    """

    path: str
    frames: Generator[pl.DataFrame, None, None]

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return self.frames


@contextlib.contextmanager
def read_model_batches(
    url: str, model: ModelSpec, *, batch_size: int = DEFAULT_BATCH_ROWS, read_path: ReadPath = "auto"
) -> Iterator[ModelBatches]:
    """Open the model's rows as Polars batches, datetimes in UTC; errors are WarehouseErrors without the password."""
    if read_path not in ("auto", "sqlalchemy"):
        raise ValueError(f"read_path is {read_path!r}; use 'auto' or 'sqlalchemy'")
    try:
        dialect = dialect_of(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise unusable_url(model, url, exc) from None
    batches = None
    with contextlib.ExitStack() as stack:
        if read_path == "auto" and dialect == "duckdb" and (database := duckdb_reader.native_database(url)):
            batches = ModelBatches("duckdb_arrow", duckdb_reader.duckdb_batches(url, database, model, batch_size))
        elif read_path == "auto" and dialect == "postgresql" and postgres_reader.handles(url):
            frames = stack.enter_context(postgres_reader.open_copy(url, model, batch_size))
            if frames is not None:
                batches = ModelBatches("postgres_copy", frames)
        batches = batches or ModelBatches("sqlalchemy", sqlalchemy_batches(url, model, batch_size))
        stack.callback(batches.frames.close)  # a reader left early still closes its connection
        yield batches


def read_model(
    url: str, model: ModelSpec, *, batch_size: int = DEFAULT_BATCH_ROWS, read_path: ReadPath = "auto"
) -> pl.DataFrame:
    """The model's rows in one frame, datetimes in UTC (batches of differing dtypes are relaxed to a common one)."""
    with read_model_batches(url, model, batch_size=batch_size, read_path=read_path) as batches:
        frames = list(batches)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
