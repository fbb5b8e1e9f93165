"""What a run did, kept as files: every row's outcome (Parquet), rejected rows (JSON lines) and every API call."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import polars as pl
import pyarrow.parquet as pq

from segment_sync.storage.layout import SyncFolder

SAMPLE_SIZE = 20
ROW_LOG_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "sync": pl.String,
    "key": pl.String,
    "kind": pl.String,
    "event": pl.String,
    "message_id": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "logged_at": pl.Datetime("us", "UTC"),
}
_FLUSH_ROWS = 50_000
_UNIQUE_COLUMNS = ("key", "message_id")  # no dictionary or statistics: they cost half the writing and help no read


class RunLog:
    """Every row of one run: delivered, rejected, skipped or undelivered, with its event, messageId and reason.

    Rows go to `log/<run_id>.parquet` in chunks (memory stays bounded), each written by a thread of the log's
    own while the run goes on; rejected rows also go to `rejected/<run_id>.jsonl`, and the first few are kept
    for metadata.
    """

    def __init__(self, sync_folder: Path, sync: str, run_id: str):
        folder = SyncFolder(sync_folder)
        self.path = folder.row_logs / f"{run_id}.parquet"
        self.rejected_path = folder.rejected_rows / f"{run_id}.jsonl"
        self.sync, self.run_id = sync, run_id
        self.statuses: Counter[str] = Counter()
        self.rejected_by_kind: Counter[str] = Counter()  # rows of the diff (with a key) rejected, per change kind
        self.rejected_sample: list[dict[str, str | None]] = []
        self._rows: dict[str, list[Any]] = {name: [] for name in ROW_LOG_SCHEMA}
        self._frames: list[pl.DataFrame] = []  # rows logged before `_rows`, not yet written
        self._writer: pq.ParquetWriter | None = None
        self._writing: Future[None] | None = None  # the chunk being written, one at a time and in order
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="run-log")
        self._rejected_file: BinaryIO | None = None

    @property
    def rejected(self) -> int:
        """How many rows were rejected."""
        return self.statuses["rejected"]

    def add(
        self,
        key: str | None,
        kind: str,
        status: str,
        *,
        event: str | None = None,
        message_id: str | None = None,
        reason: str | None = None,
        row_values: str | None = None,
    ) -> None:
        """Log one row's outcome (a null key for a row whose primary key is missing); `row_values` follow the
        reason in the files only, never in the sample that metadata shows."""
        now = dt.datetime.now(dt.UTC)
        written = f"{reason}: {row_values}" if row_values is not None else reason
        for name, value in zip(
            ROW_LOG_SCHEMA,
            (self.run_id, self.sync, key, kind, event, message_id, status, written, now),
            strict=True,
        ):
            self._rows[name].append(value)
        self.statuses[status] += 1
        if status == "rejected":
            self._reject(key, kind, written or "", sampled=reason or "")
        if self._pending_rows() >= _FLUSH_ROWS:
            self._flush()

    def add_frame(self, rows: pl.DataFrame) -> None:
        """Log many rows' outcomes: columns `key`, `kind`, `status`, and optionally `event`, `message_id`, `reason`."""
        if rows.is_empty():
            return
        now = dt.datetime.now(dt.UTC)
        given = {"run_id": pl.lit(self.run_id), "sync": pl.lit(self.sync), "logged_at": pl.lit(now)}
        columns = [
            (given[name] if name in given else pl.col(name) if name in rows.columns else pl.lit(None))
            .cast(dtype)
            .alias(name)
            for name, dtype in ROW_LOG_SCHEMA.items()
        ]
        frame = rows.select(columns)
        self._stash_rows()
        self._frames.append(frame)
        self.statuses.update(dict(frame.group_by("status").len().iter_rows()))
        rejected = frame.filter(pl.col("status") == "rejected").select("key", "kind", "reason")
        for key, kind, reason in rejected.iter_rows():
            self._reject(key, kind, reason or "")
        if self._pending_rows() >= _FLUSH_ROWS:
            self._flush()

    def _pending_rows(self) -> int:
        return len(self._rows["key"]) + sum(f.height for f in self._frames)

    def _stash_rows(self) -> None:
        """Move the rows logged one by one into a frame, keeping the order rows were logged in."""
        if self._rows["key"]:
            self._frames.append(pl.DataFrame(self._rows, schema=ROW_LOG_SCHEMA))
            self._rows = {name: [] for name in ROW_LOG_SCHEMA}

    def _reject(self, key: str | None, kind: str, reason: str, *, sampled: str | None = None) -> None:
        entry = {"key": key, "kind": kind, "reason": reason}
        if self._rejected_file is None:
            self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
            self._rejected_file = open(self.rejected_path, "wb")  # noqa: SIM115 - closed by close()
        self._rejected_file.write(orjson.dumps(entry) + b"\n")
        if key is not None:
            self.rejected_by_kind[kind] += 1
        if len(self.rejected_sample) < SAMPLE_SIZE:
            self.rejected_sample.append(entry if sampled is None else {**entry, "reason": sampled})

    def _flush(self) -> None:
        self._stash_rows()
        frames, self._frames = self._frames, []
        table = pl.concat(frames).to_arrow() if frames else pl.DataFrame(schema=ROW_LOG_SCHEMA).to_arrow()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repeated = [name for name in ROW_LOG_SCHEMA if name not in _UNIQUE_COLUMNS]
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", use_dictionary=repeated, write_statistics=repeated
            )
        self._wait_for_writing()
        self._writing = self._write_pool.submit(self._writer.write_table, table)

    def _wait_for_writing(self) -> None:
        """Wait for the chunk being written; raise what writing it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """Write what is left and close the files."""
        try:
            self._flush()
            self._wait_for_writing()
        finally:
            self._write_pool.shutdown()
            if self._writer is not None:
                self._writer.close()
        if self._rejected_file is not None:
            self._rejected_file.close()


class ApiCall(Protocol):
    """One API call as the Segment client reports it (`segment_api.client.CallRecord`)."""

    at: str
    batch: int
    attempt: int
    status: int | None
    error: str | None
    latency_ms: float
    events: int
    bytes: int
    response: str

    def redacted_request(self) -> bytes: ...


class CallLog:
    """Every API call of one run, as JSON lines: time, batch, attempt, status, latency, sizes, both bodies."""

    def __init__(self, sync_folder: Path, run_id: str):
        self.path = SyncFolder(sync_folder).calls / f"{run_id}.jsonl"
        self.summaries: list[dict[str, Any]] = []
        self._file: BinaryIO | None = None

    def __call__(self, call: ApiCall) -> None:
        """Record one call; the request body is the one sent, without the write key."""
        summary = {
            "at": call.at,
            "batch": call.batch,
            "attempt": call.attempt,
            "status": call.status,
            "error": call.error,
            "latency_ms": round(call.latency_ms, 1),
            "events": call.events,
            "bytes": call.bytes,
            "response": call.response[:500],
        }
        self.summaries.append(summary)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        record = {**summary, "response": call.response, "request": orjson.Fragment(call.redacted_request())}
        self._file.write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def prune_logs(sync_folder: Path, retention_days: float, now: float | None = None) -> int:
    """Delete run logs older than the retention period; return how many files went."""
    cutoff = (now if now is not None else time.time()) - retention_days * 86_400
    removed = 0
    for folder in SyncFolder(sync_folder).log_folders():
        for path in folder.glob("*") if folder.exists() else ():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def read_row_log(sync_folder: Path, run_id: str | None = None) -> pl.LazyFrame:
    """A sync's row logs, of one run or of all runs kept."""
    folder = SyncFolder(sync_folder).row_logs
    pattern = f"{run_id}.parquet" if run_id else "*.parquet"
    if not any(folder.glob(pattern)):
        return pl.LazyFrame(schema=ROW_LOG_SCHEMA)
    return pl.scan_parquet(folder / pattern)


def latest_run(sync_folder: Path) -> str | None:
    """The id of the sync's most recent run with a row log."""
    logs = sorted(SyncFolder(sync_folder).row_logs.glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    return logs[-1].stem if logs else None


def read_calls(sync_folder: Path, run_id: str) -> pl.DataFrame | None:
    """A run's API calls without the bodies, or None when none were recorded."""
    path = SyncFolder(sync_folder).calls / f"{run_id}.jsonl"
    if not path.exists():
        return None
    columns = ["at", "batch", "attempt", "status", "error", "latency_ms", "events", "bytes", "response"]
    with open(path, "rb") as f:
        return pl.DataFrame([{c: orjson.loads(line)[c] for c in columns} for line in f])
