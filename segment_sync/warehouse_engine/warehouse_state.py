"""A sync's state in warehouse tables: the same contract as the local state folder, for runs on any machine."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Iterator

import orjson
import polars as pl
import sqlalchemy as sa

from segment_sync.storage.journal import Journal
from segment_sync.storage.state import JournalledState, StateError, SyncMeta, parse_journal
from segment_sync.values.row_columns import CONTENT, GEN, HASH, KEY
from segment_sync.warehouse_engine.bulk_insert import bulk_insert
from segment_sync.warehouse_engine.lease import DEFAULT_TTL_SECONDS, Lease, LeaseError
from segment_sync.warehouse_engine.sessions import BY_INDEX_SHARE, joins_by_index
from segment_sync.warehouse_engine.state_tables import TABLES_FORMAT, StateTables

DELIVERED_COLUMNS = ["sync", "key", "content", "gen", "hash"]
_CREATED: set[tuple[str, str]] = set()  # (engine url, schema) whose tables this process has made sure of


class WarehouseState(JournalledState):
    """A sync's rows in `<schema>.delivered`, its progress in `.syncs`, this run's notes in `.journal`.

    Acknowledged batches go to the journal table from a thread of their own, each insert in a transaction that
    also renews the run's lease (so a run that lost it writes nothing). The journal is folded into the
    delivered rows in one transaction when the run ends, or by the next run when one died.

    A run that starts with no delivered rows (the sync's first, or the first after a reset) replaces none, so its
    notes go straight into the delivered rows, in the same transactions: each key is noted once in such a run (the
    diff's keys are unique and every row is added), and what a dead run inserted is simply there for the next.
    """

    def __init__(
        self,
        engine: sa.Engine,
        tables: StateTables,
        sync_name: str,
        run_id: str | None = None,
        *,
        lease_seconds: int = DEFAULT_TTL_SECONDS,
    ):
        self.engine, self.tables, self.sync_name, self.run_id = engine, tables, sync_name, run_id
        self.lease_seconds = lease_seconds
        self.seconds = 0.0
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._lease: Lease | None = None
        self._journal = Journal(_JournalTable(self))
        self.straight = False  # this run's notes go straight into the delivered rows
        _ensure_tables(engine, tables)
        self.meta = self._load_meta()

    # --- identity and progress -------------------------------------------------------------------------

    def _load_meta(self) -> SyncMeta:
        syncs = self.tables.syncs
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(syncs).where(syncs.c.sync == self.sync_name)).mappings().first()
            if row is None:
                self._refuse_orphan_rows(conn)
                meta = SyncMeta(sync_uuid=str(uuid.uuid4()))
                self._write_meta(conn, meta)
                return meta
        if row["format"] != TABLES_FORMAT:
            raise StateError(f"sync {self.sync_name!r}: {syncs.fullname} has format {row['format']!r}")
        return SyncMeta(
            row["sync_uuid"],
            row["generation"],
            row["baseline_done"],
            orjson.loads(row["column_kinds"]) if row["column_kinds"] else None,
            orjson.loads(row["pending"]) if row["pending"] else {},
            row["hash_basis"],
        )

    def _refuse_orphan_rows(self, conn: sa.Connection) -> None:
        """A sync with delivered or journalled rows but no row in `syncs` lost its identity: never start over."""
        for table in (self.tables.delivered, self.tables.journal):
            if self.tables.holds_rows(conn, table, self.sync_name):
                raise StateError(
                    f"sync {self.sync_name!r}: {self.tables.syncs.fullname} has no row for it but "
                    f"{table.fullname} has its rows; restore that row (a backup, or `segment-sync move-state`) "
                    "rather than start over, or every row would be sent again under new messageIds"
                )

    def key_type(self) -> str | None:
        """The primary key's type (text or integer) the delivered rows were keyed by, or None before any."""
        syncs = self.tables.syncs
        with self.engine.connect() as conn:
            return conn.execute(sa.select(syncs.c.key_type).where(syncs.c.sync == self.sync_name)).scalar()

    def note_key_type(self, key_type: str) -> None:
        """Remember the primary key's type the delivered rows are keyed by."""
        syncs = self.tables.syncs
        with self.engine.begin() as conn:
            self._renew(conn)
            conn.execute(sa.update(syncs).where(syncs.c.sync == self.sync_name).values(key_type=key_type))

    def _write_meta(self, conn: sa.Connection, meta: SyncMeta) -> None:
        syncs = self.tables.syncs
        kept = conn.execute(
            sa.select(syncs.c.diff_info, syncs.c.key_type).where(syncs.c.sync == self.sync_name)
        ).first()
        conn.execute(sa.delete(syncs).where(syncs.c.sync == self.sync_name))
        conn.execute(
            sa.insert(syncs).values(
                diff_info=kept[0] if kept else None,
                key_type=kept[1] if kept else None,
                sync=self.sync_name,
                format=TABLES_FORMAT,
                sync_uuid=meta.sync_uuid,
                generation=meta.generation,
                baseline_done=meta.baseline_done,
                hash_basis=meta.hash_basis,
                column_kinds=orjson.dumps(meta.column_kinds).decode() if meta.column_kinds is not None else None,
                pending=orjson.dumps(meta.pending).decode(),
                updated_at=sa.func.current_timestamp(),
            )
        )

    def _save_meta(self, meta: SyncMeta) -> None:
        with self.engine.begin() as conn:
            self._renew(conn)
            self._write_meta(conn, meta)

    def save_diff_info(self, info: dict) -> None:
        """Keep what the diff step found, for the delivery step (which may run on another machine)."""
        syncs = self.tables.syncs
        with self.engine.begin() as conn:
            self._renew(conn)
            conn.execute(
                sa.update(syncs).where(syncs.c.sync == self.sync_name).values(diff_info=orjson.dumps(info).decode())
            )

    def diff_info(self) -> dict | None:
        """What the latest diff step found, or None."""
        syncs = self.tables.syncs
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(syncs.c.diff_info).where(syncs.c.sync == self.sync_name)).scalar()
        return orjson.loads(text) if text else None

    # --- the run's lease -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sync's lease, so two runs of one sync never deliver at once, on any machine."""
        lease = Lease(self.engine, self.tables, self.sync_name, self.run_id, self.lease_seconds)
        try:
            lease.acquire()
        except LeaseError as exc:
            raise StateError(str(exc)) from None
        self._lease = lease
        try:
            self.meta = self._load_meta()  # as the last run left it
            yield
        finally:
            try:
                self._close_journal()
            finally:
                self._lease = None
                lease.release()

    def _renew(self, conn: sa.Connection) -> None:
        if self._lease is not None:
            try:
                self._lease.renew(conn)
            except LeaseError as exc:
                raise StateError(str(exc)) from None

    # --- a run -----------------------------------------------------------------------------------------

    def begin_run(self) -> int:
        """Start a delivery (see `JournalledState.begin_run`); with no delivered rows yet, notes go straight in."""
        generation = super().begin_run()
        with self.engine.connect() as conn:
            self.straight = not self.tables.holds_rows(conn, self.tables.delivered, self.sync_name)
        return generation

    def record_file(self, rows: pl.DataFrame) -> None:
        """Note many rows at once (skipped, or with a refreshed hash), inserted now."""
        if rows.is_empty():
            return
        with self._timed():
            self._insert_notes(self._notes(rows))

    def _insert_notes(self, notes: pl.DataFrame) -> None:
        """Noted rows into the journal (or straight into the delivered rows), with the lease renewed."""
        with self.engine.begin() as conn:
            self._renew(conn)
            if self.straight:
                bulk_insert(conn, self.tables.delivered, self._table_rows(notes))
            else:
                bulk_insert(conn, self.tables.journal, self._table_rows(notes, numbered=True))

    def _table_rows(self, notes: pl.DataFrame, *, numbered: bool = False) -> pl.DataFrame:
        """Noted rows as the state tables hold them; `numbered` in the order noted (the journal's `seq`)."""
        seq = []
        if numbered:
            with self._seq_lock:
                first, self._seq = self._seq, self._seq + notes.height
            seq = [pl.int_range(first, first + notes.height, dtype=pl.Int64).alias("seq")]
        return notes.select(
            pl.lit(self.sync_name).alias("sync"),
            *seq,
            pl.col(KEY).alias("key"),
            pl.col(CONTENT).alias("content"),
            pl.col(GEN).alias("gen"),
            pl.col(HASH).reinterpret(signed=True).alias("hash"),
        )

    def recover(self) -> None:
        """Fold the journal (this run's or a dead run's) into the delivered rows, in one transaction."""
        with self._timed():
            self._close_journal()
            straight, self.straight = self.straight, False  # later notes may replace delivered rows: by the journal
            folded = self._fold()
            if self.engine.dialect.name != "postgresql" or not (straight or folded):
                return
            format_table = self.engine.dialect.identifier_preparer.format_table
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if straight:  # statistics of the rows a first run inserted: else the next diff plans for none
                    conn.execute(sa.text(f"ANALYZE {format_table(self.tables.delivered)}"))
                if folded:  # the folded notes' space, free for the next run's
                    conn.execute(sa.text(f"VACUUM {format_table(self.tables.journal)}"))

    def _fold(self) -> bool:
        """Fold this sync's journal rows into the delivered rows; False when there were none."""
        with self.engine.begin() as conn:
            self._renew(conn)
            if not self.tables.holds_rows(conn, self.tables.journal, self.sync_name):
                return False
            by_key = self.engine.dialect.name == "postgresql" and fold_by_key(conn, self.tables)
            replaced, newest, emptied = fold_statements(self.tables, self.sync_name)
            with joins_by_index(conn) if by_key else contextlib.nullcontext():
                conn.execute(replaced)
            conn.execute(newest)
            conn.execute(emptied)
        return True

    def reset(self) -> str | None:
        """Forget what was delivered (kept aside in a table, whose name is returned); the sync gets a new identity."""
        self.recover()
        delivered = self.tables.delivered
        backup = None
        with self.engine.begin() as conn:
            self._renew(conn)
            rows = sa.select(delivered).where(delivered.c.sync == self.sync_name)
            if conn.execute(sa.select(sa.func.count()).select_from(rows.subquery())).scalar_one():
                name = self.tables.reset_backup_name(self.sync_name, self.meta.generation)
                kept = sa.Table(
                    name,
                    sa.MetaData(schema=self.tables.schema),
                    *(sa.Column(c.name, c.type) for c in delivered.columns),
                )
                kept.drop(conn, checkfirst=True)
                kept.create(conn)
                conn.execute(sa.insert(kept).from_select([c.name for c in delivered.columns], rows))
                conn.execute(sa.delete(delivered).where(delivered.c.sync == self.sync_name))
                backup = f"{self.tables.schema}.{name}"
            self.meta = SyncMeta(str(uuid.uuid4()), self.meta.generation + 1)
            self._write_meta(conn, self.meta)
        return backup

    def delivered_row_count(self) -> int:
        """Rows currently delivered (tombstones not counted)."""
        delivered = self.tables.delivered
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count(delivered.c.hash)).where(delivered.c.sync == self.sync_name)
            return conn.execute(query).scalar_one()

    def delivered_frames(self, batch_rows: int = 100_000) -> Iterator[pl.DataFrame]:
        """The delivered rows (tombstones included) in the local state's schema, a batch at a time."""
        delivered = self.tables.delivered
        query = sa.select(delivered.c.key, delivered.c.content, delivered.c.gen, delivered.c.hash).where(
            delivered.c.sync == self.sync_name
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
            for part in result.partitions():
                frame = pl.DataFrame(
                    part, schema={KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64, "h": pl.Int64}, orient="row"
                )
                yield frame.select(KEY, CONTENT, GEN, pl.col("h").reinterpret(signed=False).alias(HASH))

    def take_over(self, meta: SyncMeta, frames: Iterable[pl.DataFrame]) -> int:
        """Become the state described by `meta` and delivered rows (from the other engine), in one transaction.

        The hashes are the other engine's, so the hash basis is cleared: the next diff compares every row by content
        once and sends nothing for rows that did not change. Returns the rows taken over.
        """
        delivered = self.tables.delivered
        taken = 0
        with self.engine.begin() as conn:
            self._renew(conn)
            conn.execute(sa.delete(delivered).where(delivered.c.sync == self.sync_name))
            for frame in frames:
                rows = frame.select(
                    pl.lit(self.sync_name).alias("sync"),
                    pl.col(KEY).alias("key"),
                    pl.col(CONTENT).alias("content"),
                    pl.col(GEN).alias("gen"),
                    pl.col(HASH).reinterpret(signed=True).alias("hash"),
                )
                bulk_insert(conn, delivered, rows)
                taken += rows.height
            self.meta = SyncMeta(meta.sync_uuid, meta.generation, meta.baseline_done, meta.column_kinds, meta.pending)
            self._write_meta(conn, self.meta)
        return taken


def fold_statements(tables: StateTables, sync: str) -> tuple[sa.Delete, sa.Insert, sa.Delete]:
    """A sync's journal folded into its delivered rows (the journalled keys' rows deleted, each key's latest note
    inserted), then emptied; run as one transaction, so a crash leaves either the journal or the folded rows."""
    delivered, journal = tables.delivered, tables.journal
    mine = journal.c.sync == sync
    newest = (
        sa.select(
            *(journal.c[c] for c in DELIVERED_COLUMNS),
            sa.func.row_number().over(partition_by=journal.c.key, order_by=journal.c.seq.desc()).label("rn"),
        )
        .where(mine)
        .subquery("newest")
    )
    return (
        sa.delete(delivered).where(delivered.c.sync == sync, delivered.c.key.in_(sa.select(journal.c.key).where(mine))),
        sa.insert(delivered).from_select(
            DELIVERED_COLUMNS, sa.select(*(newest.c[c] for c in DELIVERED_COLUMNS)).where(newest.c.rn == 1)
        ),
        sa.delete(journal).where(mine),
    )


# a table's rows as PostgreSQL's planner estimates them: its last statistics' density times its pages now (None
# for a table never analyzed, or analyzed empty)
_ROWS_NOW = sa.text(
    """SELECT CASE WHEN reltuples < 0 OR relpages = 0 THEN NULL
    ELSE reltuples / relpages * (pg_relation_size(oid) / current_setting('block_size')::int) END
    FROM pg_class WHERE oid = CAST(:name AS regclass)"""
)


def fold_by_key(conn: sa.Connection, tables: StateTables) -> bool:
    """Fresh statistics of the journal for the fold (or the planner misjudges its join: 4x slower on 1M rows after a
    baseline); True when the journal is small beside the delivered rows, so that they are best replaced key by key.

    The delivered rows are counted as the planner does, from their last statistics scaled to the table's size now:
    analyzing them again took 0.6-2.5 s a fold at 10M rows (they are analyzed here only if they never were).
    """
    journal, delivered = (conn.dialect.identifier_preparer.format_table(t) for t in (tables.journal, tables.delivered))
    conn.execute(sa.text(f"ANALYZE {journal}"))
    journal_rows = conn.execute(_ROWS_NOW, {"name": journal}).scalar_one()
    delivered_rows = conn.execute(_ROWS_NOW, {"name": delivered}).scalar_one()
    if delivered_rows is None:
        conn.execute(sa.text(f"ANALYZE {delivered}"))
        delivered_rows = conn.execute(_ROWS_NOW, {"name": delivered}).scalar_one()
    return (journal_rows or 0) < BY_INDEX_SHARE * (delivered_rows or 0)


class _JournalTable:
    """The journal's sink: each write's lines inserted into the journal table (or the delivered rows), with the lease
    renewed."""

    def __init__(self, state: WarehouseState):
        self.state = state

    @property
    def name(self) -> str:
        """The table written to, for errors."""
        table = self.state.tables.delivered if self.state.straight else self.state.tables.journal
        return f"{table.fullname} (sync {self.state.sync_name!r})"

    def write(self, data: bytes) -> None:
        self.state._insert_notes(parse_journal(data))

    def close(self) -> None:
        """Nothing is held between writes."""


def _ensure_tables(engine: sa.Engine, tables: StateTables) -> None:
    marker = (engine.url.render_as_string(hide_password=True), tables.schema)
    if marker not in _CREATED:
        tables.create(engine)
        _CREATED.add(marker)
