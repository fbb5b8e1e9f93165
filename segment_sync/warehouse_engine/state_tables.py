"""The warehouse engine's tables, in a schema of the user's choice: each sync's progress, rows, journal and lease."""

from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa

from segment_sync.error_text import first_line

DEFAULT_SCHEMA = "segment_sync"
IDENTIFIER_BYTES = 63  # PostgreSQL's limit; Snowflake's and BigQuery's are larger
TABLES_FORMAT = 1


class StateTables:
    """`<schema>.syncs`, `.delivered`, `.journal`, `.snapshots` and `.leases`, shared by every sync (see README)."""

    def __init__(self, schema: str = DEFAULT_SCHEMA, scratch: str = ""):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise StateTablesError(f"warehouse_schema is {schema!r}: use letters, digits and _ (not first a digit)")
        self.schema = schema
        self.scratch = scratch  # the suffix of a dry run's own snapshot, diff and work tables
        self.metadata = sa.MetaData(schema=schema)
        self.syncs = sa.Table(
            "syncs",
            self.metadata,
            sa.Column("sync", sa.String(200), primary_key=True),
            sa.Column("format", sa.Integer, nullable=False),
            sa.Column("sync_uuid", sa.String(36), nullable=False),
            sa.Column("generation", sa.BigInteger, nullable=False),
            sa.Column("baseline_done", sa.Boolean, nullable=False),
            sa.Column("hash_basis", sa.String(200)),
            sa.Column("column_kinds", sa.Text),  # JSON: each sent column's kind, for the guard
            sa.Column("pending", sa.Text),  # JSON: the last run's rows neither delivered nor rejected, per kind
            sa.Column("key_type", sa.String(200)),  # the primary key's type when the state was made
            sa.Column("diff_info", sa.Text),  # JSON: what the latest diff step found, for the delivery step
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        )
        self.delivered = sa.Table(
            "delivered",
            self.metadata,
            sa.Column("sync", sa.String(200), nullable=False),
            sa.Column("key", sa.Text, nullable=False),  # the primary key as text
            sa.Column("content", sa.Text),  # the JSON last sent; null: removed (and its removal sent)
            sa.Column("gen", sa.BigInteger, nullable=False),  # the generation (run) that delivered it
            sa.Column("hash", sa.BigInteger),  # the warehouse's hash of the key and compared columns
        )
        self.journal = sa.Table(
            "journal",
            self.metadata,
            sa.Column("sync", sa.String(200), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),  # order of noting within the run
            sa.Column("key", sa.Text, nullable=False),
            sa.Column("content", sa.Text),
            sa.Column("gen", sa.BigInteger, nullable=False),
            sa.Column("hash", sa.BigInteger),
        )
        self.snapshots = sa.Table(
            "snapshots",
            self.metadata,
            sa.Column("model", sa.String(200), primary_key=True),
            sa.Column("taken_at", sa.String(40), nullable=False),  # ISO 8601 UTC: when the copy began
            sa.Column("row_count", sa.BigInteger, nullable=False),
        )
        self.leases = sa.Table(
            "leases",
            self.metadata,
            sa.Column("sync", sa.String(200), primary_key=True),
            sa.Column("holder", sa.String(200), nullable=False),  # host, process and a random part
            sa.Column("run_id", sa.String(200)),
            sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),  # the warehouse's clock
            sa.Column("ttl_seconds", sa.Integer, nullable=False),
        )
        # PostgreSQL finds a sync's delivered rows by index; DuckDB's indexes refuse a key deleted and inserted in
        # one transaction, and column stores scan by zone maps instead. The journal has none: it is written in bulk
        # and read whole, and an index of keys in random order made its COPY 3.8x slower (3M rows: 15.6 s, 4.2 s).
        sa.Index("delivered_sync_key", self.delivered.c.sync, self.delivered.c.key).ddl_if(dialect="postgresql")

    @staticmethod
    def holds_rows(conn: sa.Connection, table: sa.Table, sync: str) -> bool:
        """Whether `table` (the delivered rows or the journal) holds any row of the sync."""
        return conn.execute(sa.select(table.c.key).where(table.c.sync == sync).limit(1)).first() is not None

    def table(self, name: str) -> sa.Table:
        """A table of the schema by name, with no columns declared (a snapshot or a diff)."""
        return sa.table(name, schema=self.schema)

    def scratch_copy(self, run_id: str) -> StateTables:
        """The same state tables, with a run's own snapshot, diff and work tables: a dry run's, dropped after it."""
        return StateTables(self.schema, scratch=f"__dry_{run_id.replace('-', '')[:8]}")

    def snapshot_name(self, model: str, *, following: bool = False) -> str:
        """The table a model is copied into (`following`: the copy being made, renamed to it when complete; its
        prefix tells it apart from the copy of a model whose name ends in `__next`)."""
        return fitted_name(f"snapshot{'_next' if following else ''}__{model}{self.scratch}")

    def snapshot_noted_as(self, model: str) -> str:
        """The name under which `snapshots` notes the copy of a model."""
        return f"{model}{self.scratch}"

    def diff_name(self, sync: str, *, following: bool = False) -> str:
        """The table of a sync's changed keys (`following`: the one being filled in parts, renamed to it when
        complete)."""
        return fitted_name(f"diff{'_next' if following else ''}__{sync}{self.scratch}")

    def work_name(self, part: str, sync: str) -> str:
        """A work table of a sync's diff, read out by slices (`news` or `olds`)."""
        return fitted_name(f"diff_{part}__{sync}{self.scratch}")

    def reset_backup_name(self, sync: str, generation: int) -> str:
        """Where a reset keeps a sync's delivered rows."""
        return fitted_name(f"delivered_before_reset__{sync}__{generation}")

    def create(self, engine: sa.Engine) -> None:
        """Create the schema and the tables where missing (a warehouse user without the right gets a clear error).

        Two runs starting at once may both try; the loser's attempt fails on the catalog, and is made once more,
        finding everything there.
        """
        for attempt in (1, 2):
            try:
                with engine.begin() as conn:
                    conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                    self.metadata.create_all(conn, checkfirst=True)
                    if conn.dialect.name == "postgresql":
                        _drop_journal_index(conn, self.schema)
                return
            except sa.exc.DBAPIError as exc:
                if attempt == 1:
                    continue  # another run may have created them meanwhile (a duplicate in the catalog)
                raise StateTablesError(
                    f"cannot create the schema {self.schema!r} or its tables: {first_line(exc.orig or exc)}. Grant "
                    f"the sync's warehouse user CREATE on the database (or create schema {self.schema!r} and grant "
                    "it CREATE and USAGE there), or choose another schema with `warehouse_schema`."
                ) from None


def fitted_name(name: str) -> str:
    """A table name within PostgreSQL's 63 bytes: a longer one keeps its start and ends in a digest of the whole,
    so two long names never meet in the part PostgreSQL would keep."""
    if len(name) <= IDENTIFIER_BYTES:
        return name
    return f"{name[: IDENTIFIER_BYTES - 13]}_{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _drop_journal_index(conn: sa.Connection, schema: str) -> None:
    """Drop the journal's index made by versions before 2026-12-07; a user who may not (not its owner) keeps it."""
    quoted = conn.dialect.identifier_preparer.quote_schema(schema)
    try:
        with conn.begin_nested():
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {quoted}.journal_sync_key"))
    except sa.exc.DBAPIError:
        pass  # it only slows the journal's writes


class StateTablesError(RuntimeError):
    """The engine's tables cannot be created or used as they are."""
