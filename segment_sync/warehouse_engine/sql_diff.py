"""The diff as SQL in the warehouse: the model copied into a snapshot table, the keys whose hash moved found by a
join with the delivered rows, and only those rows read out, to be compared and encoded as the Polars engine does."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from segment_sync.diff.keyed_diff import UNCHANGED, changes_between, current_rows, empty_diff
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.values.encoding import key_strings, row_contents
from segment_sync.values.row_columns import BEFORE_GEN, CONTENT, DELIVERED_SCHEMA, GEN, HASH, KEY, KIND
from segment_sync.warehouse.model_reader import DEFAULT_BATCH_ROWS, finish_batch, read_model_batches
from segment_sync.warehouse_engine.duplicate_rows import drop_ranked_duplicates, ranked_query
from segment_sync.warehouse_engine.key_sql import (
    KEY_PART_TYPES,
    ByteOrder,
    key_missing,
    key_present,
    key_text,
    key_type_of,
)
from segment_sync.warehouse_engine.parted_insert import PARTED_ROWS, in_part, insert_in_parts, parts_for
from segment_sync.warehouse_engine.row_hash_sql import AS_TEXT, RowHash, postgres_row_hash
from segment_sync.warehouse_engine.sessions import BY_INDEX_SHARE, joins_by_index
from segment_sync.warehouse_engine.state_tables import StateTables

WAREHOUSE_HASH = "__segment_sync_warehouse_hash"
WAREHOUSE_KEY = "__segment_sync_warehouse_key"
KEY_SAMPLE_ROWS = 1000  # keys whose text in SQL and in Polars are compared when the model is copied
SLICE_ROWS = 100_000  # diff rows read out and compared at once: what bounds the client's memory
DIRECT_SLICES = 10  # slices read straight from the diff table; beyond, gathered in work tables (one scan of it)
_BUCKET = "segment_sync_slice"
DIFF_COLUMNS = ("key", "kind", "hash")
EXACTLY_HASHED = ("int2", "int4", "int8", "text", "bool", "date", "time", "timestamp", "timestamptz", "uuid", "bytea")
# 3: on PostgreSQL, the XOR of each value's own hash (2: `hash_record_extended`, 14+; before: the row's text)
ROW_HASH_FORMAT = "row-hash-3"


class WarehouseDiffError(ValueError):
    """The model cannot be diffed in the warehouse as it is (its key, its columns)."""


@dataclass(frozen=True)
class SnapshotCounts:
    """What the snapshot table holds: rows, rows with a null key, keys held by more than one row; and the rows
    keep_first / keep_last dropped, with the first keys that had them."""

    rows: int
    null_key_rows: int
    duplicate_keys: int
    key_type: str
    dropped_rows: int = 0
    dropped_keys: tuple[str, ...] = ()


def take_snapshot(url: str, engine: sa.Engine, tables: StateTables, model: ModelSpec) -> SnapshotCounts:
    """Copy the model's rows into its snapshot table and count its keys; the last snapshot stays if this one fails.

    On PostgreSQL the table is unlogged (a copy made again by the next run needs no WAL, half the time) and
    indexed uniquely by its key as text, which checks the keys and lets the delivery find changed rows by index.
    With keep_first / keep_last, the copy keeps one row per key.
    """
    keeping = model.on_duplicate_key != "fail"
    source = model.query
    if keeping:
        returned = sa.select(sa.text("*")).select_from(sa.text(f"({model.query}) AS q")).limit(0)
        source = ranked_query(engine, model, _checked_columns(model, _read(url, engine, model, returned).schema))
    taken_at = dt.datetime.now(dt.UTC).isoformat()
    preparer = engine.dialect.identifier_preparer
    schema = preparer.quote_schema(tables.schema)
    target, following = tables.snapshot_name(model.name), tables.snapshot_name(model.name, following=True)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {schema}.{preparer.quote(following)}"))
        create = "CREATE UNLOGGED TABLE" if postgres else "CREATE TABLE"
        copied = conn.execute(sa.text(f"{create} {schema}.{preparer.quote(following)} AS {source}")).rowcount
        copy = sa.table(following, schema=tables.schema)
        dropped, dropped_keys = drop_ranked_duplicates(conn, copy, model) if keeping else (0, [])
    everything = sa.select(sa.text("*")).select_from(sa.table(following, schema=tables.schema)).limit(0)
    columns = _checked_columns(model, _read(url, engine, model, everything).schema)
    key_type = key_type_of(columns, model)
    if key_type is None:
        read_as = ", ".join(f"{k} as {columns[k]}" for k in model.key_columns)
        raise WarehouseDiffError(
            f"model {model.name!r}: its primary key is read {read_as}; the warehouse engine keys rows by "
            f"{' or '.join(KEY_PART_TYPES)} columns (cast it in the model's query, or use engine: polars)"
        )
    _check_key_text(url, engine, sa.table(following, *map(sa.column, model.key_columns), schema=tables.schema), model)
    with engine.begin() as conn:  # one transaction where DDL is transactional (PostgreSQL, DuckDB)
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {schema}.{preparer.quote(target)}"))
        _rename(conn, tables.schema, following, target)
        snap = sa.table(target, *(sa.column(k) for k in model.key_columns), schema=tables.schema)
        indexed = postgres and _unique_key_index(conn, snap, _index_key(conn, model))
        if indexed and len(model.key_columns) == 1 and copied >= 0:  # no scan: the copy's count, null keys by index
            missing = sa.select(sa.func.count()).select_from(snap).where(key_missing(snap, model))
            rows, nulls = copied - dropped, conn.execute(missing).scalar_one()
        else:
            rows, nulls = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.case((key_missing(snap, model), 1))))
            ).one()
        duplicates = 0 if indexed else _duplicate_keys(conn, snap, model)
        noted = tables.snapshots
        noted_as = tables.snapshot_noted_as(model.name)
        conn.execute(sa.delete(noted).where(noted.c.model == noted_as))
        conn.execute(sa.insert(noted).values(model=noted_as, taken_at=taken_at, row_count=rows))
    return SnapshotCounts(rows, nulls, duplicates, key_type, dropped, tuple(dropped_keys))


def _rename(conn: sa.Connection, schema: str, name: str, to: str) -> None:
    """Rename a table of the schema (a copy made whole under another name)."""
    preparer = conn.dialect.identifier_preparer
    quoted = f"{preparer.quote_schema(schema)}.{preparer.quote(name)}"
    conn.execute(sa.text(f"ALTER TABLE {quoted} RENAME TO {preparer.quote(to)}"))


def _check_key_text(url: str, engine: sa.Engine, copy: sa.TableClause, model: ModelSpec) -> None:
    """Refuse a key whose text in SQL is not the Polars engine's for the copy's first rows (a type-wide difference:
    PostgreSQL's char(n) loses its padding as text, and is read with it)."""
    sample = sa.select(key_text(copy, model).label(WAREHOUSE_KEY), *(copy.c[k] for k in model.key_columns))
    rows = _read(url, engine, model, sample.where(key_present(copy, model)).limit(KEY_SAMPLE_ROWS))
    if rows.height:
        _refuse_keys_written_apart(model, rows.select(key_strings(rows, model.key_columns).alias(KEY), WAREHOUSE_KEY))


def _checked_columns(model: ModelSpec, columns: pl.Schema) -> pl.Schema:
    """The model's columns, once the primary key's (and order_by's, with keep_first / keep_last) are among them."""
    missing = [c for c in model.needed_columns if c not in columns]
    if missing:
        raise WarehouseDiffError(
            f"model {model.name!r}: the query returns no column {missing}; the model's primary_key (and order_by, "
            f"with keep_first/keep_last) must name columns the query returns (it returns {', '.join(columns)})"
        )
    return columns


def _index_key(conn: sa.Connection, model: ModelSpec) -> str:
    """What a snapshot is indexed by: one key column as text by its bytes (the form the delivery's join uses, see
    `ByteOrder`, so that it finds changed rows by index), or a composite key's columns (the JSON text of its parts
    is no immutable expression)."""
    quoted = [conn.dialect.identifier_preparer.quote(c) for c in model.key_columns]
    return f'((CAST({quoted[0]} AS TEXT)) COLLATE "C")' if len(quoted) == 1 else ", ".join(quoted)


def _unique_key_index(conn: sa.Connection, rows: sa.TableClause, key: str) -> bool:
    """A unique index of a table by `key` (SQL: columns or expressions); False when keys repeat."""
    preparer = conn.dialect.identifier_preparer
    table = f"{preparer.quote_schema(rows.schema)}.{preparer.quote(rows.name)}"
    try:
        with conn.begin_nested():
            conn.execute(sa.text(f"CREATE UNIQUE INDEX ON {table} ({key})"))
    except sa.exc.IntegrityError:
        return False
    return True


def _duplicate_keys(conn: sa.Connection, snap: sa.TableClause, model: ModelSpec) -> int:
    """How many keys more than one row of the snapshot holds."""
    parts = [snap.c[k] for k in model.key_columns]
    repeated = sa.select(*parts).where(key_present(snap, model)).group_by(*parts)
    repeated = repeated.having(sa.func.count() > 1).subquery()
    return conn.execute(sa.select(sa.func.count()).select_from(repeated)).scalar_one()


def check_snapshot_kept(engine: sa.Engine, tables: StateTables, model: ModelSpec) -> None:
    """Refuse a snapshot table that lost its rows: PostgreSQL empties unlogged tables when it restarts after a crash,
    and an empty snapshot would read as every row removed."""
    noted, snap = tables.snapshots, _snapshot_table(tables, model)
    with engine.connect() as conn:
        noted_as = tables.snapshot_noted_as(model.name)
        count = conn.execute(sa.select(noted.c.row_count).where(noted.c.model == noted_as)).scalar()
        if count and conn.execute(sa.select(sa.literal(1)).select_from(snap).limit(1)).first() is None:
            raise WarehouseDiffError(
                f"model {model.name!r}: its snapshot table {tables.schema}.{snap.name} is empty though {count:,} rows "
                "were copied (the warehouse restarted and emptied it); nothing was sent. Run the sync's job again: "
                "its snapshot step copies the model anew."
            )


def snapshot_note(engine: sa.Engine, tables: StateTables, model: ModelSpec) -> tuple[str, int] | None:
    """When the model's snapshot table was taken (ISO 8601 UTC) and the rows it holds, or None before the first."""
    noted = tables.snapshots
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(noted.c.taken_at, noted.c.row_count).where(noted.c.model == tables.snapshot_noted_as(model.name))
        ).first()
    return (row[0], row[1]) if row else None


def live_rows_before(counts: dict[str, int], current_keys: int) -> int:
    """The delivered rows not removed before this diff, from its counts (no scan of them): every current key is
    delivered unless added, and the removed were delivered though no longer current."""
    return current_keys - counts["added"] + counts["removed"]


def snapshot_schema(url: str, engine: sa.Engine, tables: StateTables, model: ModelSpec) -> pl.Schema:
    """The snapshot table's columns, as the read paths give them."""
    everything = sa.select(sa.text("*")).select_from(_snapshot_table(tables, model)).limit(0)
    return _read(url, engine, model, everything).schema


def clear_changes(engine: sa.Engine, tables: StateTables, sync: SyncSpec) -> None:
    """An empty diff table (after a reset, which sends nothing)."""
    diff = _diff_table(tables, sync)
    with engine.begin() as conn:
        diff.drop(conn, checkfirst=True)
        diff.create(conn)


def find_changes(
    engine: sa.Engine,
    tables: StateTables,
    sync: SyncSpec,
    model: ModelSpec,
    *,
    trust_hashes: bool,
    full_resync: bool = False,
    parted_rows: int = PARTED_ROWS,
) -> dict[str, int]:
    """Fill the sync's diff table with the keys added, removed or whose hash moved (with `full_resync`: every
    current key, as added); return their counts by kind.

    On PostgreSQL a snapshot of `parted_rows` or more is joined in parts on concurrent connections (see
    `parted_insert`), into a table renamed to the diff table when every part is in, so that a failed diff leaves
    the last one whole; with one statement, the diff table is replaced in its transaction.
    """
    check_snapshot_kept(engine, tables, model)
    diff = _diff_table(tables, sync)
    types = hashed_types(engine, tables, model)
    changes = functools.partial(
        changes_query, tables, sync, model, trust_hashes=trust_hashes, full_resync=full_resync, types=types
    )
    noted = snapshot_note(engine, tables, model)
    parts = 1 if full_resync or noted is None else parts_for(engine, noted[1], parted_rows)
    parted = parts > 1 and _changes_in_parts(engine, tables, sync, model, changes, noted, parts)
    with engine.begin() as conn:
        diff.drop(conn, checkfirst=True)
        if parted:
            _rename(conn, tables.schema, tables.diff_name(sync.name, following=True), diff.name)
        else:
            if conn.dialect.name == "postgresql":  # left by a parted diff whose run was killed
                _diff_table(tables, sync, following=True).drop(conn, checkfirst=True)
            diff.create(conn)
            conn.execute(sa.insert(diff).from_select(DIFF_COLUMNS, changes()))
        # a key twice: delivered rows doubled by hand. On PostgreSQL a unique index checks it (4 s at 10M keys, where
        # grouping them took 20 s) and serves the preview's first keys
        if engine.dialect.name != "postgresql" or not _unique_key_index(conn, diff, '"key"'):
            twice = sa.select(diff.c.key).group_by(diff.c.key).having(sa.func.count() > 1).limit(3)
            _refuse_repeated_keys(sync, tables, conn.execute(twice).scalars().all())
        counts = dict(conn.execute(sa.select(diff.c.kind, sa.func.count()).group_by(diff.c.kind)).all())
    return {kind: int(counts.get(kind, 0)) for kind in ("added", "changed", "removed")}


def changes_query(
    tables: StateTables,
    sync: SyncSpec,
    model: ModelSpec,
    *,
    trust_hashes: bool,
    full_resync: bool = False,
    types: Mapping[str, str] | None = None,
    part: tuple[int, int] | None = None,
) -> sa.Select:
    """The keys added, removed or whose hash moved, with their kind and current hash: the diff in SQL (with
    `full_resync`, every current key as added). With `types` (PostgreSQL, see `hashed_types`) each row is hashed
    value by value; without, by the dialect's own row hash. With `part` (i, n), only the keys of part i of n
    (PostgreSQL, see `parted_insert.in_part`)."""
    snap = _snapshot_table(tables, model, *_needed(sync, model))
    key = key_text(snap, model)
    if types is None:
        row_hash = RowHash(key, *(snap.c[c] for c in sync.compared_columns))
    else:
        row_hash = postgres_row_hash(key, [(snap.c[c], types.get(c, AS_TEXT)) for c in sync.compared_columns])
    delivered = tables.delivered
    current = sa.select(key.label("k"), row_hash.label("h")).where(key_present(snap, model))
    old = sa.select(  # the content's nullness only: a join that carries no content stays in memory
        delivered.c.key, delivered.c.content.is_(None).label("gone"), delivered.c.hash
    ).where(delivered.c.sync == sync.name)
    if part is not None:
        current, old = current.where(in_part(key, *part)), old.where(in_part(delivered.c.key, *part))
    current, old = current.subquery("cur"), old.subquery("old")
    if full_resync:
        return sa.select(current.c.k, sa.literal("added"), current.c.h)
    kind = sa.case(
        (old.c.key.is_(None), "added"),
        (current.c.k.is_(None), "removed"),
        (old.c.gone, "added"),  # a row removed before, back again
        else_="changed",
    )
    moved = sa.or_(current.c.h != old.c.hash, old.c.hash.is_(None), sa.literal(not trust_hashes))
    candidate = sa.or_(
        old.c.key.is_(None),
        sa.and_(current.c.k.is_(None), sa.not_(old.c.gone)),
        sa.and_(current.c.k.is_not(None), old.c.gone),
        sa.and_(current.c.k.is_not(None), moved),
    )
    changes = (
        sa.select(sa.func.coalesce(current.c.k, old.c.key), kind, current.c.h)
        .select_from(current.join(old, current.c.k == old.c.key, full=True))
        .where(candidate)
    )
    return changes


def _changes_in_parts(
    engine: sa.Engine,
    tables: StateTables,
    sync: SyncSpec,
    model: ModelSpec,
    changes: Callable[..., sa.Select],
    noted: tuple[str, int],
    parts: int,
) -> bool:
    """Fill the sync's following diff table in `parts` concurrent parts; False (and no table) when another run
    replaced the model's snapshot meanwhile, so that parts may have read different copies."""
    following = _diff_table(tables, sync, following=True)
    with engine.begin() as conn:
        following.drop(conn, checkfirst=True)
        following.create(conn)
    insert_in_parts(engine, following, DIFF_COLUMNS, lambda i: changes(part=(i, parts)), parts)
    if snapshot_note(engine, tables, model) == noted:
        return True
    with engine.begin() as conn:
        following.drop(conn)
    return False


def changed_keys(engine: sa.Engine, tables: StateTables, sync: SyncSpec, limit: int) -> pl.DataFrame:
    """The first keys of the diff table with their change, for a preview (no values are read out)."""
    diff = _diff_table(tables, sync)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(diff.c.key, diff.c.kind).order_by(diff.c.key).limit(limit)).all()
    return pl.DataFrame(rows, schema={KEY: pl.String, KIND: pl.String}, orient="row")


def write_changes(
    url: str,
    engine: sa.Engine,
    tables: StateTables,
    sync: SyncSpec,
    model: ModelSpec,
    path: Path,
    *,
    slice_rows: int = SLICE_ROWS,
    only_changed: bool = False,
    resync_generation: int | None = None,
    keep_unchanged: bool = True,
) -> None:
    """The diff table's rows read out and compared by content, into a Parquet file: the Polars engine's diff for
    those keys, with the warehouse's row hashes (stored and compared in the warehouse next time).

    Rows whose hash moved without their compared content are `unchanged`. Beyond `slice_rows` changed keys, the
    changed rows are first gathered in two work tables by slice (a hash of the key), read one slice at a time, so
    memory holds a slice whatever the size of the diff, and the warehouse joins the snapshot once; with no delivered
    row to pair them with (a first run, a full resync), the current rows are streamed in parts of `slice_rows`. With
    `only_changed`, only the rows whose hash moved are read (to find those whose content did not). With
    `resync_generation` (a full resync), every row is added again under that generation, so its messageIds are new.
    Without `keep_unchanged`, the file holds only the rows that send events, so the delivery reads it by slices.
    """
    check_snapshot_kept(engine, tables, model)
    schema = empty_diff(snapshot_schema(url, engine, tables, model), sync.sent_columns).schema
    diff = _diff_table(tables, sync)
    wanted = diff.c.kind == "changed" if only_changed else sa.true()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(diff).where(wanted)).scalar_one()
    slices = max(1, -(-rows // slice_rows))
    news_query, olds_query = _changes_queries(tables, sync, model, slices, only_changed=only_changed, diff=diff)
    if resync_generation is not None:  # nothing delivered is compared: every row is sent again
        olds_query = olds_query.where(sa.false())
    work_tables = False
    try:
        if slices == 1:
            news, olds = (_read(url, engine, model, _without_slice(q)) for q in (news_query, olds_query))
            parts: Iterator[tuple[pl.DataFrame, pl.DataFrame]] = iter([(news, olds)])
        elif resync_generation is not None or not _delivered_any(engine, tables, sync):
            # no delivered row to pair with (a first run, a full resync): the current rows streamed in parts, in the
            # delivered rows' key order, so that their notes are inserted in their index's order
            ordered = _without_slice(news_query).order_by(diff.c.key)
            news_parts = _read_in_parts(url, engine, model, ordered, slice_rows)
            parts = ((news, pl.DataFrame(schema=DELIVERED_SCHEMA)) for news in news_parts)
        elif slices <= DIRECT_SLICES and _by_index(engine, tables, model, rows):
            # a few keys of a big model: each slice found by key lookups (and the diff table scanned once a slice)
            parts = (
                (
                    _read(url, engine, model, _in_slice(news_query, i), by_index=True),
                    _read(url, engine, model, _in_slice(olds_query, i), by_index=True),
                )
                for i in range(slices)
            )
        else:
            work_tables = True
            news_table = _work_table(engine, tables, tables.work_name("news", sync.name), news_query)
            olds_table = _work_table(engine, tables, tables.work_name("olds", sync.name), olds_query)
            parts = (
                (
                    _read(url, engine, model, _slice_of(news_table, news_query, i)),
                    _read(url, engine, model, _slice_of(olds_table, olds_query, i)),
                )
                for i in range(slices)
            )
        with pq.ParquetWriter(path, pl.DataFrame(schema=schema).to_arrow().schema) as writer:
            for news, olds in parts:
                changes = _changes_of(tables, sync, model, news, olds)
                if resync_generation is not None:
                    changes = changes.with_columns(pl.lit(resync_generation, pl.Int64).alias(BEFORE_GEN))
                if not keep_unchanged:
                    changes = changes.filter(pl.col(KIND) != UNCHANGED)
                writer.write_table(changes.select(list(schema)).cast(dict(schema)).to_arrow())
    finally:
        if work_tables:
            with engine.begin() as conn:
                for name in (tables.work_name("news", sync.name), tables.work_name("olds", sync.name)):
                    sa.Table(name, sa.MetaData(schema=tables.schema)).drop(conn, checkfirst=True)


def _by_index(engine: sa.Engine, tables: StateTables, model: ModelSpec, rows: int) -> bool:
    """Whether `rows` changed keys are best found by index lookups in the snapshot's and the delivered rows'
    indexes: on PostgreSQL, for a key of one column (see `_index_key`), when they are few beside the snapshot."""
    if engine.dialect.name != "postgresql" or len(model.key_columns) != 1:
        return False
    noted = snapshot_note(engine, tables, model)
    return rows < BY_INDEX_SHARE * (noted[1] if noted else 0)


def _delivered_any(engine: sa.Engine, tables: StateTables, sync: SyncSpec) -> bool:
    """Whether the sync has any delivered row (none before its first run, or after a reset)."""
    with engine.connect() as conn:
        return tables.holds_rows(conn, tables.delivered, sync.name)


def _changes_queries(
    tables: StateTables,
    sync: SyncSpec,
    model: ModelSpec,
    slices: int,
    *,
    only_changed: bool = False,
    diff: sa.Table | None = None,
) -> tuple[sa.Select, sa.Select]:
    """The diff's current rows (added and changed) and its delivered rows (changed, removed, and tombstones), each
    with its slice (a hash of the key modulo `slices`); `diff` is the diff table they join (made anew if None)."""
    columns = _needed(sync, model)
    diff = _diff_table(tables, sync) if diff is None else diff
    wanted = diff.c.kind == "changed" if only_changed else sa.true()
    snap = _snapshot_table(tables, model, *columns)
    bucket = sa.func.mod(sa.func.mod(RowHash(diff.c.key), slices) + slices, slices)  # never negative
    checked = [diff.c.key.label(WAREHOUSE_KEY)] if len(model.key_columns) > 1 else []
    news = (
        sa.select(*(snap.c[c] for c in columns), diff.c.hash.label(WAREHOUSE_HASH), *checked, bucket.label(_BUCKET))
        .select_from(snap.join(diff, ByteOrder(key_text(snap, model)) == diff.c.key))
        .where(diff.c.kind != "removed", wanted)
    )
    delivered = tables.delivered
    olds = (
        sa.select(
            delivered.c.key.label(KEY),
            delivered.c.content.label(CONTENT),
            delivered.c.gen.label(GEN),
            delivered.c.hash.label(HASH),
            bucket.label(_BUCKET),
        )
        .select_from(delivered.join(diff, delivered.c.key == diff.c.key))
        .where(delivered.c.sync == sync.name, wanted)
    )
    return news, olds


def _work_table(engine: sa.Engine, tables: StateTables, name: str, query: sa.Select) -> sa.TableClause:
    """A query's rows in a table of the schema, ordered by slice (unlogged and indexed by it on PostgreSQL)."""
    preparer = engine.dialect.identifier_preparer
    target = f"{preparer.quote_schema(tables.schema)}.{preparer.quote(name)}"
    ordered = query.order_by(sa.literal_column(_BUCKET))
    sql = str(ordered.compile(engine, compile_kwargs={"literal_binds": True}))
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {target}"))
        conn.execute(sa.text(f"{'CREATE UNLOGGED TABLE' if postgres else 'CREATE TABLE'} {target} AS {sql}"))
        if postgres:
            conn.execute(sa.text(f"CREATE INDEX ON {target} ({preparer.quote(_BUCKET)})"))
    return sa.table(name, *(sa.column(c.name) for c in query.selected_columns), schema=tables.schema)


def _slice_of(table: sa.TableClause, query: sa.Select, part: int) -> sa.Select:
    """The rows of a work table in one slice, with the columns of the query that made it."""
    columns = [table.c[c.name] for c in query.selected_columns if c.name != _BUCKET]
    return sa.select(*columns).where(table.c[_BUCKET] == part)


def _in_slice(query: sa.Select, part: int) -> sa.Select:
    """The query's rows in one slice, without the slice column."""
    bucket = next(c for c in query.selected_columns if c.name == _BUCKET)
    return _without_slice(query).where(bucket.element == part)  # type: ignore[attr-defined]


def _without_slice(query: sa.Select) -> sa.Select:
    """The query with no slice column (one slice: nothing to tell apart)."""
    return query.with_only_columns(
        *(c for c in query.selected_columns if c.name != _BUCKET), maintain_column_froms=True
    )


def _changes_of(
    tables: StateTables, sync: SyncSpec, model: ModelSpec, news: pl.DataFrame, olds: pl.DataFrame
) -> pl.DataFrame:
    """The diff of a part's current rows (`news`) and delivered rows (`olds`), compared by content."""
    news, olds = news.drop(_BUCKET, strict=False), olds.drop(_BUCKET, strict=False)
    _refuse_repeated_keys(sync, tables, olds.filter(pl.col(KEY).is_duplicated())[KEY].unique().sort().head(3).to_list())
    olds = olds.with_columns(pl.col(HASH).cast(pl.Int64).reinterpret(signed=False)).cast(DELIVERED_SCHEMA)  # type: ignore[arg-type]
    if news.is_empty():
        news = news.cast({WAREHOUSE_HASH: pl.Int64})  # an empty read may not know the type
    checked = [WAREHOUSE_KEY] if WAREHOUSE_KEY in news.columns else []
    current = current_rows(news, model.key_columns, sync.sent_columns, keep=[WAREHOUSE_HASH, *checked])
    current = current.with_columns(pl.col(WAREHOUSE_HASH).cast(pl.Int64).reinterpret(signed=False).alias(HASH))
    current = current.collect()
    if checked:
        _refuse_keys_written_apart(model, current)
        current = current.drop(checked)
    news = news.drop(checked)
    changes = changes_between(current, olds, news.schema, sync.sent_columns, sync.compared_columns, trust_hashes=False)
    return changes.sort(KEY)


def _refuse_keys_written_apart(model: ModelSpec, keys: pl.DataFrame) -> None:
    """Refuse keys whose text in SQL (`WAREHOUSE_KEY`) is not the Polars engine's (`KEY`): such a row would never
    pair with its delivered row (`key_text` follows `key_strings`, but a warehouse may write a type or a character
    otherwise)."""
    apart = keys.filter(pl.col(KEY) != pl.col(WAREHOUSE_KEY))
    if apart.height:
        first = apart.row(0, named=True)
        raise WarehouseDiffError(
            f"model {model.name!r}: the warehouse writes the key {first[KEY]!r} as {first[WAREHOUSE_KEY]!r} "
            f"({apart.height:,} of {keys.height:,} keys read differ); nothing was sent. Cast the key to text (or "
            "varchar) in the model's query: a char(n) column loses its padding as text; a composite key's part "
            "holds a character this warehouse escapes otherwise in JSON: clean it there; or use engine: polars"
        )


def snapshot_row(
    url: str, engine: sa.Engine, tables: StateTables, model: ModelSpec, key: str
) -> tuple[str, pl.DataFrame]:
    """One row of the snapshot table by its key as text (`key` empty: the first key), with that key; no row when
    the key is not there."""
    snap = _snapshot_table(tables, model, *model.key_columns)
    text = ByteOrder(key_text(snap, model))
    if not key:
        with engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(text)).select_from(snap)).scalar()
        if first is None:
            raise WarehouseDiffError(f"model {model.name!r} has no row with a primary key in its latest snapshot")
        key = first
    query = sa.select(sa.text("*")).select_from(snap).where(text == key)
    return key, _read(url, engine, model, query)


def null_key_contents(url: str, engine: sa.Engine, tables: StateTables, sync: SyncSpec, model: ModelSpec) -> list[str]:
    """The sent columns of the snapshot's rows whose key is null, as JSON (reported as rejected rows)."""
    snap = _snapshot_table(tables, model, *_needed(sync, model))
    query = sa.select(*(snap.c[c] for c in sync.sent_columns)).where(key_missing(snap, model))
    rows = _read(url, engine, model, query)
    return row_contents(rows, sync.sent_columns) if rows.height else []


def _read(url: str, engine: sa.Engine, model: ModelSpec, query: sa.Select, *, by_index: bool = False) -> pl.DataFrame:
    """A query's rows by the model's read path (see `_read_batches`)."""
    return _concat(list(_read_batches(url, engine, model, query, by_index=by_index)))


def _read_in_parts(
    url: str, engine: sa.Engine, model: ModelSpec, query: sa.Select, part_rows: int
) -> Iterator[pl.DataFrame]:
    """A query's rows streamed by the model's read path, in frames of at least `part_rows` (but the last)."""
    held: list[pl.DataFrame] = []
    held_rows = 0
    for frame in _read_batches(url, engine, model, query):
        held.append(frame)
        held_rows += frame.height
        if held_rows >= part_rows:
            yield _concat(held)
            held, held_rows = [], 0
    if held:
        yield _concat(held)


def _read_batches(
    url: str, engine: sa.Engine, model: ModelSpec, query: sa.Select, *, by_index: bool = False
) -> Iterator[pl.DataFrame]:
    """A query's rows by the model's read path, as they arrive, over the engine's own connection where there is
    one: DuckDB (one process cannot open a file with two configurations) and PostgreSQL (its sessions' settings
    plan the joins; with `by_index`, by index lookups)."""
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    spec = ModelSpec(name=model.name, sql=sql, primary_key=model.primary_key)
    with engine.connect() as conn, joins_by_index(conn) if by_index else contextlib.nullcontext():
        driver = conn.connection.driver_connection
        if engine.dialect.name == "duckdb":
            from segment_sync.warehouse.duckdb_reader import batches_on

            cursor = driver.cursor()  # type: ignore[union-attr]
            try:
                for frame, plan in batches_on(cursor, url, spec, DEFAULT_BATCH_ROWS):
                    yield finish_batch(frame, plan)
            finally:
                cursor.close()
            return
        if engine.dialect.name == "postgresql" and type(driver).__module__.startswith("psycopg"):
            from segment_sync.warehouse import postgres_reader

            batches = postgres_reader.batches_on(driver, url, spec, DEFAULT_BATCH_ROWS)  # type: ignore[arg-type]
            if batches is not None:
                for frame, plan in batches:
                    yield finish_batch(frame, plan)
                return
    with read_model_batches(url, spec) as frames:
        yield from frames


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def _refuse_repeated_keys(sync: SyncSpec, tables: StateTables, keys: list[str]) -> None:
    if keys:
        raise WarehouseDiffError(
            f"sync {sync.name!r}: {tables.delivered.fullname} holds more than one row for the keys {keys} (changed "
            "by hand?); nothing was sent. Keep one row per key there (the latest gen), then run again."
        )


def _snapshot_table(tables: StateTables, model: ModelSpec, *columns: str) -> sa.TableClause:
    return sa.table(tables.snapshot_name(model.name), *(sa.column(c) for c in columns), schema=tables.schema)


def _diff_table(tables: StateTables, sync: SyncSpec, *, following: bool = False) -> sa.Table:
    return sa.Table(
        tables.diff_name(sync.name, following=following),
        sa.MetaData(schema=tables.schema),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("hash", sa.BigInteger),
    )


def _needed(sync: SyncSpec, model: ModelSpec) -> list[str]:
    return list(dict.fromkeys([*model.key_columns, *sync.sent_columns]))


def hash_basis(engine: sa.Engine, tables: StateTables, sync: SyncSpec, model: ModelSpec, schema: pl.Schema) -> str:
    """What the warehouse's row hashes depend on: how they are made, the dialect and its version, the compared
    columns, their types and which are hashed as text.

    A column whose type changed may hash differently with the same content: the basis changes with it, so that
    the next diff compares every row by content once instead of trusting the hashes.
    """
    with engine.connect():  # the server's version is known once connected
        version = ".".join(map(str, engine.dialect.server_version_info or ()))
    text_hashed = text_hashed_columns(engine, tables, model)
    columns = ",".join(f"{c}:{schema[c]}{' as text' if c in text_hashed else ''}" for c in sync.compared_columns)
    digest = hashlib.sha256(columns.encode()).hexdigest()[:16]  # any number of columns fits the syncs table
    return f"warehouse:{ROW_HASH_FORMAT}:{engine.dialect.name}:{version}:{digest}"


def text_hashed_columns(engine: sa.Engine, tables: StateTables, model: ModelSpec) -> frozenset[str]:
    """The snapshot's columns hashed as their text: on PostgreSQL, all but those of a type whose hash tells apart
    every two values written differently (numeric hashes 1.0 and 1.00 alike, jsonb its numbers, citext letter
    case, json and arrays have none); elsewhere none."""
    return frozenset(c for c, t in (hashed_types(engine, tables, model) or {}).items() if t == AS_TEXT)


def hashed_types(engine: sa.Engine, tables: StateTables, model: ModelSpec) -> dict[str, str] | None:
    """On PostgreSQL, each snapshot column's type as the row hash takes it: its name for the exactly hashed types,
    `AS_TEXT` for the others; elsewhere None (the dialect's own row hash)."""
    if engine.dialect.name != "postgresql":
        return None
    query = sa.text(
        """SELECT a.attname, CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname END
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"""
    )
    preparer = engine.dialect.identifier_preparer
    table = f"{preparer.quote_schema(tables.schema)}.{preparer.quote(tables.snapshot_name(model.name))}"
    with engine.connect() as conn:
        rows = conn.execute(query, {"table": table}).all()
    return {name: type_name if type_name in EXACTLY_HASHED else AS_TEXT for name, type_name in rows}
