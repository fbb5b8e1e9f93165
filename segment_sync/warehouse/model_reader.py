"""Reading a model into Polars batches: a dialect's fast path where it has one, else SQLAlchemy."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl
import polars.selectors as cs
import sqlalchemy as sa

from segment_sync.spec import ModelSpec
from segment_sync.values.encoding import normalize_types
from segment_sync.values.json_column import from_texts, is_json
from segment_sync.warehouse.column_types import ReadAs
from segment_sync.warehouse.sqlalchemy_reader import ReadPath, sqlalchemy_batches
from segment_sync.warehouse.warehouse_error import dialect_of, unusable_url

DEFAULT_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class ModelBatches:
    """A model's rows as Polars frames, and the read path producing them: duckdb_arrow, postgres_copy or sqlalchemy.

    Every batch of a dialect with declared column types (PostgreSQL, DuckDB, Snowflake, BigQuery) has the same
    schema on every path; other dialects (SQLite, ...) are read by inference, a batch at a time (combine them
    with how="vertical_relaxed"). `non_finite` counts, per column, the NaN and ±Infinity values, sent as null.
    """

    path: str
    frames: Generator[pl.DataFrame, None, None]
    non_finite: Counter[str] = field(default_factory=Counter)
    fallback: str | None = None  # why a dialect with a fast path was read through SQLAlchemy

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return self.frames

    @property
    def one_schema(self) -> bool:
        """Whether every batch surely has the first one's schema: a fast path, which reads by declared types."""
        return self.path != "sqlalchemy"


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
    non_finite: Counter[str] = Counter()

    def finished(frames: Iterator[tuple[pl.DataFrame, Mapping[str, ReadAs] | None]]) -> Generator[pl.DataFrame]:
        with contextlib.closing(frames):  # type: ignore[type-var]
            for frame, plan in frames:
                yield finish_batch(frame, plan, non_finite)

    with contextlib.ExitStack() as stack:
        path, frames, fallback = "sqlalchemy", None, None
        # a fast path's driver is imported only when a model uses it: psycopg's dialects alone take 0.1 s
        if read_path == "auto" and dialect == "duckdb":
            from segment_sync.warehouse import duckdb_reader

            if database := duckdb_reader.native_database(url):
                path, frames = "duckdb_arrow", duckdb_reader.duckdb_batches(url, database, model, batch_size)
            else:
                fallback = "the URL sets options that only SQLAlchemy applies"
        elif read_path == "auto" and dialect == "postgresql":
            from segment_sync.warehouse import postgres_reader

            if postgres_reader.handles(url):
                frames = stack.enter_context(postgres_reader.open_copy(url, model, batch_size))
                path = "postgres_copy" if frames is not None else path
                fallback = None if frames is not None else "PostgreSQL before 14, or two result columns of one name"
            else:
                fallback = f"COPY needs psycopg, and the URL names {sa.make_url(url).get_driver_name()}"
        frames = frames or sqlalchemy_batches(url, model, batch_size)
        batches = ModelBatches(path, finished(frames), non_finite, fallback)
        stack.callback(batches.frames.close)  # a reader left early still closes its connection
        yield batches


def finish_batch(
    frame: pl.DataFrame, plan: Mapping[str, ReadAs] | None, non_finite: Counter[str] | None = None
) -> pl.DataFrame:
    """A batch as stored: each column as its plan says (JSON columns compacted), binary as base64 text, Python
    objects as their text, datetimes in UTC; NaN and ±Infinity counted per column into `non_finite`."""
    counts = non_finite if non_finite is not None else Counter()
    fixes: list[pl.Series | pl.Expr] = []
    for name, dtype in frame.schema.items():
        read_as = plan.get(name) if plan else None
        if read_as is not None and is_json(read_as.final):
            texts, fixed = from_texts(frame.get_column(name))
            counts.update({name: fixed} if fixed else {})
            fixes.append(texts)
        elif read_as is not None and read_as.final != dtype:
            fixes.append(cs.by_name(name).as_expr().cast(read_as.final))
        elif dtype == pl.Binary:
            fixes.append(cs.by_name(name).as_expr().bin.encode("base64"))
        elif dtype == pl.Object:
            fixes.append(cs.by_name(name).as_expr().map_elements(str, return_dtype=pl.String))
    frame = frame.with_columns(fixes) if fixes else frame
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    if floats:
        bad = frame.select(cs.by_name(floats).is_finite().not_().sum()).row(0)
        counts.update({name: n for name, n in zip(floats, bad, strict=True) if n})
    return normalize_types(frame)


def read_model(
    url: str, model: ModelSpec, *, batch_size: int = DEFAULT_BATCH_ROWS, read_path: ReadPath = "auto"
) -> pl.DataFrame:
    """The model's rows in one frame, datetimes in UTC (batches of differing dtypes are relaxed to a common one)."""
    with read_model_batches(url, model, batch_size=batch_size, read_path=read_path) as batches:
        frames = list(batches)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
