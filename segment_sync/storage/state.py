"""A sync's state: what Segment acknowledged, per primary key, kept in files that survive a crash."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq

from segment_sync.storage import durable_file
from segment_sync.storage.journal import FileSink, Journal, JournalError
from segment_sync.storage.layout import SyncFolder
from segment_sync.values.row_columns import CONTENT, DELIVERED_SCHEMA, GEN, HASH, KEY

STATE_FORMAT = 3  # 3: delivered rows in delivered.parquet and segments on top of it; 2 had no segments
COMPACT_SHARE = 0.2  # fold the segments into delivered.parquet once they hold this share of its rows
MAX_SEGMENTS = 16
_ROW = "_state_row"
COMPRESSION = "lz4"  # local working files: lz4 reads about 1.5x faster than zstd, for twice the disk
JOURNAL_SCHEMA = {"g": pl.Int64, "k": pl.String, "c": pl.String, "h": pl.UInt64}


class StateError(RuntimeError):
    """The state of a sync cannot be used as it is."""


@dataclass
class SyncMeta:
    """Identity and progress of one sync."""

    sync_uuid: str
    generation: int = 0
    baseline_done: bool = False
    column_kinds: dict[str, str] | None = None
    pending: dict[str, int] = field(default_factory=dict)  # last run's unacknowledged rows, per change kind
    hash_basis: str | None = None  # what the stored row hashes were made with (see diff.hash_basis)


class JournalledState:
    """What a sync's state does the same on either engine: runs, the journal of a run, the meta after it.

    A subclass keeps `sync_name`, `meta`, `seconds` and a `_journal`, and provides `_save_meta` and `recover`
    (fold the notes of a run into the delivered rows).
    """

    sync_name: str
    meta: SyncMeta
    seconds: float  # the run's wait for its state: queuing journal lines, notes written in bulk, folding
    _journal: Journal

    def _save_meta(self, meta: SyncMeta) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        """Fold the notes of a run (this one or a dead one) into the delivered rows."""
        raise NotImplementedError

    def dry_run_copy(self) -> DryRunState:
        """A read-only view for a dry run."""
        return DryRunState(self)

    def begin_run(self) -> int:
        """Start a delivery: fold any journal left by a dead run and return this run's generation."""
        self.recover()
        self.meta.generation += 1
        self._save_meta(self.meta)
        return self.meta.generation

    def record(self, rows: pl.DataFrame) -> None:
        """Note rows as delivered in this run, durably by the time this returns.

        `rows` has `_key`, `_content` (null for a removed row) and `_hash`; an optional `_gen` keeps a row's
        generation (for a row whose hash is only refreshed).
        """
        self.record_lines(line.encode() for line in self.journal_lines(rows))
        with self._timed():
            self._close_journal()

    def _notes(self, rows: pl.DataFrame) -> pl.DataFrame:
        return noted_rows(rows, self.meta.generation)

    def journal_lines(self, rows: pl.DataFrame) -> pl.Series:
        """The journal line of each row (see `record`), made ahead so noting a batch is only an append."""
        return journal_line_strings(self._notes(rows))

    def record_lines(self, lines: Iterable[bytes | memoryview]) -> None:
        """Append journal lines (from `journal_lines`), written by the journal's thread.

        They are durable once the run folds its notes; until then, a row acknowledged but not yet written when the
        process dies is sent again by the next run under the same messageId.
        """
        with self._timed():
            try:
                self._journal.append(b"".join(lines))
            except JournalError as exc:
                raise StateError(f"sync {self.sync_name!r}: {exc}") from exc

    @property
    def journal_seconds(self) -> float:
        """The journal thread's time writing (alongside sending, not in its way)."""
        return self._journal.busy_seconds

    def _close_journal(self) -> None:
        """Wait for the journal's lines to be written, and close it."""
        try:
            self._journal.close()
        except JournalError as exc:
            raise StateError(f"sync {self.sync_name!r}: {exc}") from exc

    def commit(
        self,
        column_kinds: dict[str, str] | None = None,
        pending: dict[str, int] | None = None,
        *,
        baseline: bool = True,
        hash_basis: str | None = None,
    ) -> None:
        """End a run: fold the journal into the delivered rows and note the baseline, column kinds and pending rows.

        `baseline=False` keeps the next run an initial one (after a reset, which sends nothing).
        """
        self.recover()
        self.meta.baseline_done = self.meta.baseline_done or baseline
        if column_kinds is not None:
            self.meta.column_kinds = column_kinds
        if pending is not None:
            self.meta.pending = {k: v for k, v in pending.items() if v}
        if hash_basis is not None:
            self.meta.hash_basis = hash_basis
        self._save_meta(self.meta)

    def note_hash_basis(self, basis: str) -> None:
        """Remember what the stored row hashes are made with from now on."""
        if self.meta.hash_basis != basis:
            self.meta.hash_basis = basis
            self._save_meta(self.meta)

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started


class SyncState(JournalledState):
    """Files under `<state_dir>/syncs/<sync>/`: meta.json, delivered.parquet and a journal of the current run.

    Every acknowledged batch is appended to the journal, which a thread of its own writes and fsyncs while
    sending goes on (a row acknowledged but not yet on disk when the process dies is sent again under the same
    messageId, as is a batch in flight); rows noted in bulk
    (skipped, or with a refreshed hash) go in `noted-*.parquet` files instead. The notes are folded into
    delivered.parquet (written to a temporary file, then renamed) when a run ends, or by the next run when
    one died.
    """

    def __init__(self, root: Path, sync_name: str):
        self.root = root
        self.sync_name = sync_name
        self.folder = SyncFolder(root)
        self.meta_path = self.folder.meta
        self.delivered_path = self.folder.delivered
        self.journal_path = self.folder.journal
        self._notes_made = 0
        self._live: pl.LazyFrame | None = None  # delivered(), until the next fold
        self.seconds = 0.0  # the run's wait for its state: queuing journal lines, files of notes and folding
        self._journal = Journal(FileSink(self.journal_path))
        root.mkdir(parents=True, exist_ok=True)
        self.meta = self._load_meta()

    def _load_meta(self) -> SyncMeta:
        if not self.meta_path.exists():
            leftovers = [self.delivered_path, self.journal_path, *self.folder.segments(), *self._note_files()]
            if any(path.exists() for path in leftovers):
                raise StateError(
                    f"sync {self.sync_name!r}: {self.meta_path} is missing but delivered rows exist; "
                    "restore it from a backup rather than start over, or every row would be sent again"
                )
            meta = SyncMeta(sync_uuid=str(uuid.uuid4()))
            self._save_meta(meta)
            return meta
        raw = orjson.loads(self.meta_path.read_bytes())
        if raw.get("format") == 1:
            self._upgrade_from_format_1()
        elif raw.get("format") not in (2, STATE_FORMAT):
            raise StateError(f"sync {self.sync_name!r}: {self.meta_path} has format {raw.get('format')!r}")
        meta = SyncMeta(
            raw["sync_uuid"],
            raw["generation"],
            raw["baseline_done"],
            raw.get("column_kinds"),
            raw.get("pending", {}),
            raw.get("hash_basis"),
        )
        if raw.get("format") != STATE_FORMAT:  # so that a version that knows no segments refuses the folder
            self._save_meta(meta)
        return meta

    def _upgrade_from_format_1(self) -> None:
        """Add row hashes to a state written before they existed (a placeholder: the basis is unknown)."""
        if self.journal_path.exists():
            _drop_torn_tail(self.journal_path)
            lines = [orjson.loads(line) for line in self.journal_path.read_bytes().splitlines()]
            rows = [{**e, "h": None if e["c"] is None else 0} for e in lines]
            durable_file.write_bytes(self.journal_path, b"".join(orjson.dumps(r) + b"\n" for r in rows))
        if self.delivered_path.exists():
            old = pl.read_parquet(self.delivered_path)
            placeholder = pl.when(pl.col(CONTENT).is_not_null()).then(pl.lit(0, pl.UInt64))
            write_parquet_atomic(old.with_columns(placeholder.alias(HASH)).cast(DELIVERED_SCHEMA), self.delivered_path)

    def _save_meta(self, meta: SyncMeta) -> None:
        body = {"format": STATE_FORMAT, **meta.__dict__}
        durable_file.write_bytes(self.meta_path, orjson.dumps(body, option=orjson.OPT_INDENT_2))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sync's lock, so two runs of one sync never deliver at once."""
        with open(self.folder.state_lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(
                    f"sync {self.sync_name!r} is already running in another process; this run sent nothing. "
                    "Wait for that run to finish, then run again."
                ) from None
            try:
                yield
            finally:
                try:
                    self._close_journal()  # its thread never outlives the lock
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def delivered(self) -> pl.LazyFrame:
        """The last acknowledged content per key (null content: removed, kept as a tombstone).

        That is delivered.parquet, less its rows whose key a segment holds, plus each key's row in the latest
        segment holding it. Finding those rows reads the keys of delivered.parquet once per fold.
        """
        if self._live is None:
            self._live = self._live_rows()
        return self._live

    def _live_rows(self) -> pl.LazyFrame:
        segments = self.folder.segments()
        base = pl.scan_parquet(self.delivered_path) if self.delivered_path.exists() else None
        if not segments:
            return base if base is not None else pl.LazyFrame(schema=DELIVERED_SCHEMA)
        newest = pl.concat([pl.scan_parquet(s) for s in segments]).unique(KEY, keep="last", maintain_order=True)
        if base is None:
            return newest
        keys = newest.select(KEY).collect()[KEY]
        superseded = base.with_row_index(_ROW).filter(pl.col(KEY).is_in(keys.implode())).select(_ROW).collect()
        kept = base.with_row_index(_ROW).filter(~pl.col(_ROW).is_in(superseded[_ROW].implode())).drop(_ROW)
        return pl.concat([kept, newest])

    def delivered_row_count(self) -> int:
        """Rows currently delivered (tombstones not counted)."""
        return self.delivered().select(pl.col(HASH).count()).collect().item()

    def reset(self) -> Path | None:
        """Forget what was delivered (kept aside as a backup file, whose path is returned).

        The sync gets a new identity too, so the events of the next run get messageIds never used before.
        """
        self.recover()
        if self.folder.segments():
            self._compact()
        backup = None
        if self.delivered_path.exists():
            backup = self.folder.delivered_backup(self.meta.generation)
            os.replace(self.delivered_path, backup)
            self._live = None
        self.meta = SyncMeta(str(uuid.uuid4()), self.meta.generation + 1)
        self._save_meta(self.meta)
        return backup

    def take_over(self, meta: SyncMeta, frames: Iterable[pl.DataFrame]) -> int:
        """Become the state described by `meta` and delivered rows (from the other engine); returns the rows.

        The hashes are the other engine's, so the hash basis is cleared: the next diff compares every row by content
        once and sends nothing for rows that did not change.
        """
        self.recover()
        rows = pl.concat([pl.DataFrame(schema=DELIVERED_SCHEMA), *frames]).cast(DELIVERED_SCHEMA)
        for segment in self.folder.segments():
            segment.unlink()
        write_parquet_atomic(rows, self.delivered_path)
        self._live = None
        self.meta = SyncMeta(meta.sync_uuid, meta.generation, meta.baseline_done, meta.column_kinds, meta.pending)
        self._save_meta(self.meta)
        return rows.height

    def record_file(self, rows: pl.DataFrame) -> None:
        """Durably note rows (as `record`) in a Parquet file of their own, folded with the journal.

        For many rows at once (rows skipped, such as a baseline, or whose hash is refreshed): far cheaper than
        journal lines to write and to fold. A key is noted once a run, so the files and the journal never
        disagree; should they, the journal wins, then the later file.
        """
        if rows.is_empty():
            return
        with self._timed():
            self._notes_made += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._notes_made:06d}"
            write_parquet_atomic(self._notes(rows), self.folder.notes_file(name))

    def _note_files(self) -> list[Path]:
        """The files of rows noted by `record_file`, oldest first (their names start with the time)."""
        return self.folder.notes()

    def recover(self) -> None:
        """Fold the notes of a run (this one or a dead one: files, then the journal) into delivered.parquet.

        Every file is read in pieces: memory holds one piece and the noted keys, not the rows.
        """
        with self._timed():
            self._close_journal()  # before the fold reads (and removes) the file
            self._fold()

    def _fold(self) -> None:
        for torn in self.folder.unfinished_notes():  # a dead run's unfinished file
            torn.unlink()
        files = self._note_files()
        journal = self.journal_path.exists()
        if not files and not journal:
            return
        sources = list(files)
        if journal and _drop_torn_tail(self.journal_path):  # a torn line: its row is sent again, same messageId
            journal_notes = self.folder.journal_notes
            _journal_notes(self.journal_path).sink_parquet(journal_notes, compression=COMPRESSION, engine="streaming")
            sources.append(journal_notes)
        if sources:
            notes = pl.concat([pl.scan_parquet(source) for source in sources])
            noted = notes.select(KEY).collect(engine="streaming")[KEY]
            once = noted.n_unique() == noted.len()
            if not once:  # a key noted twice in one run (rare, and small): the last wins
                notes = notes.unique(KEY, keep="last", maintain_order=True)
            segments = self.folder.segments()
            if self.delivered_path.exists() or segments:  # a segment of the rows noted: a run writes what it changed
                sink_parquet_atomic(notes, self.folder.next_segment())
            elif once and len(sources) == 1:  # a first run with one file of notes: it becomes the state
                durable_file.replace(sources.pop(), self.delivered_path)
            else:  # a first run: the notes are all there is
                sink_parquet_atomic(notes, self.delivered_path)
        for source in sources:  # only once the state holds them: folding the same notes again is harmless
            source.unlink()
        if journal:
            self.journal_path.unlink()
        durable_file.sync_folder(self.root)
        self._live = None
        if self._compaction_due():
            self._compact()

    def _compaction_due(self) -> bool:
        segments = self.folder.segments()
        if not segments or not self.delivered_path.exists():
            return False
        rows = pl.concat([pl.scan_parquet(s).select(pl.len()) for s in segments]).sum().collect().item()
        base_rows = pl.scan_parquet(self.delivered_path).select(pl.len()).collect().item()
        return len(segments) > MAX_SEGMENTS or rows > COMPACT_SHARE * base_rows

    def _compact(self) -> None:
        """Fold the segments into delivered.parquet (written aside, then renamed; they are removed after)."""
        segments = self.folder.segments()
        sink_parquet_atomic(self.delivered(), self.delivered_path)
        for segment in segments:  # delivered.parquet holds their rows now: were one left, it would change nothing
            segment.unlink()
        durable_file.sync_folder(self.root)
        self._live = None


def noted_rows(rows: pl.DataFrame, generation: int) -> pl.DataFrame:
    """Rows as a state keeps them: the run's generation unless a row brings its own."""
    gen = pl.col(GEN) if GEN in rows.columns else pl.lit(generation, pl.Int64)
    return rows.select(KEY, CONTENT, gen.alias(GEN), HASH).cast(DELIVERED_SCHEMA)


def journal_line_strings(notes: pl.DataFrame) -> pl.Series:
    """One JSON line per noted row (`g`, `k`, `c`, `h`), as the journal holds them."""
    entry = pl.struct(
        pl.col(GEN).alias("g"), pl.col(KEY).alias("k"), pl.col(CONTENT).alias("c"), pl.col(HASH).alias("h")
    )
    return notes.select(pl.concat_str([entry.struct.json_encode(), pl.lit("\n")])).to_series()


def parse_journal(data: bytes) -> pl.DataFrame:
    """Journal lines back into noted rows."""
    notes = pl.read_ndjson(data, schema=JOURNAL_SCHEMA)
    return notes.select(
        pl.col("k").alias(KEY), pl.col("c").alias(CONTENT), pl.col("g").alias(GEN), pl.col("h").alias(HASH)
    )


def _journal_notes(path: Path) -> pl.LazyFrame:
    """A journal's notes in the delivered schema, parsed as they stream (twice as fast as blocks read by hand)."""
    notes = pl.scan_ndjson(path, schema=JOURNAL_SCHEMA)
    return notes.select(
        pl.col("k").alias(KEY), pl.col("c").alias(CONTENT), pl.col("g").alias(GEN), pl.col("h").alias(HASH)
    )


class DryRunState:
    """A sync's state as a dry run sees it: the same identity and progress, and nothing is ever written."""

    def __init__(self, state: JournalledState):
        self.meta = state.meta
        self.seconds = 0.0
        self.journal_seconds = 0.0

    def record(self, rows: pl.DataFrame) -> None:
        """Note nothing."""

    def record_file(self, rows: pl.DataFrame) -> None:
        """Note nothing."""

    def journal_lines(self, rows: pl.DataFrame) -> pl.Series:
        """Empty lines: nothing is noted."""
        return pl.Series("line", [""] * rows.height, pl.String)

    def record_lines(self, lines: Iterable[bytes | memoryview]) -> None:
        """Note nothing."""


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write a Parquet file aside, then durably rename it over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(durable_file.aside(path), compression=COMPRESSION)
    durable_file.replace(durable_file.aside(path), path)


def sink_parquet_atomic(frame: pl.LazyFrame, path: Path) -> None:
    """Stream a lazy frame into a Parquet file aside, then durably rename it over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.sink_parquet(durable_file.aside(path), compression=COMPRESSION, engine="streaming")
    durable_file.replace(durable_file.aside(path), path)


def iter_parquet(path: Path, batch_rows: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """A Parquet file's rows in frames of at most `batch_rows`, read as they are needed."""
    with pq.ParquetFile(path) as source:
        for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
            yield pl.from_arrow(batch)  # type: ignore[misc]


def _drop_torn_tail(path: Path, block: int = 1 << 16) -> int:
    """Cut a file after its last newline; return the bytes kept."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(pos - block, 0)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        else:
            keep = 0
        if keep != end:
            f.truncate(keep)
            os.fsync(f.fileno())
        return keep
