"""Where everything lives under the state folder: snapshots, the outbox and each sync's folder."""

from __future__ import annotations

from pathlib import Path

NOTES_PREFIX, NOTES_SUFFIX = "noted-", ".parquet"  # rows noted in bulk by a run, until folded into the state
SEGMENT_PREFIX = "delivered.s"  # delivered rows of one fold, on top of delivered.parquet until compacted


def snapshot_path(state_dir: Path, model: str) -> Path:
    """Where a model's latest snapshot is stored."""
    return state_dir / "snapshots" / f"{model}.parquet"


def snapshot_checks_path(snapshot: Path) -> Path:
    """Where the snapshot's key checks are noted, with the identity of the file they checked."""
    return snapshot.with_suffix(".checks.json")


def file_identity(path: Path) -> list[int]:
    """Size and modification time: enough to tell one written snapshot file from the next."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def outbox_path(state_dir: Path, sync: str) -> Path:
    """Where the local outbox writes a sync's request bodies (the demo's destination)."""
    return state_dir / "outbox" / f"{sync}.jsonl"


class SyncFolder:
    """`<state_dir>/syncs/<sync>/`: the sync's state, its latest diff, its alert status and its run logs."""

    def __init__(self, path: Path):
        self.path = path
        self.meta = path / "meta.json"
        self.delivered = path / "delivered.parquet"
        self.journal = path / "journal.jsonl"
        self.journal_notes = path / "journal.parquet"  # a dead run's journal, read back while it is folded
        self.state_lock = path / "lock"
        self.diff = path / "diff.parquet"
        self.diff_info = path / "diff.json"
        self.alerts = path / "alerts.json"
        self.alerts_lock = path / "alerts.lock"
        self.row_logs = path / "log"
        self.rejected_rows = path / "rejected"
        self.calls = path / "calls"
        self.dry_runs = path / "dry_runs"

    @classmethod
    def of(cls, state_dir: Path, sync: str) -> SyncFolder:
        """The folder of a sync under a state folder."""
        return cls(state_dir / "syncs" / sync)

    def log_folders(self) -> list[Path]:
        """The folders of run logs: row logs, rejected rows, API calls and dry runs' request bodies."""
        return [self.row_logs, self.rejected_rows, self.calls, self.dry_runs]

    def notes(self) -> list[Path]:
        """The files of rows noted in bulk by the current run, oldest first (their names start with the time)."""
        return sorted(self.path.glob(f"{NOTES_PREFIX}*{NOTES_SUFFIX}"))

    def notes_file(self, name: str) -> Path:
        """Where a run notes a file of rows in bulk."""
        return self.path / f"{NOTES_PREFIX}{name}{NOTES_SUFFIX}"

    def unfinished_notes(self) -> list[Path]:
        """Notes files a killed run left half written."""
        return sorted(self.path.glob(f"{NOTES_PREFIX}*{NOTES_SUFFIX}.tmp"))

    def segments(self) -> list[Path]:
        """The delivered rows folded since delivered.parquet was last compacted, oldest first."""
        return sorted(self.path.glob(f"{SEGMENT_PREFIX}*.parquet"))

    def next_segment(self) -> Path:
        """Where the next fold writes its rows: numbered after the newest segment, so the order is the folds'."""
        segments = self.segments()
        number = int(segments[-1].name.removeprefix(SEGMENT_PREFIX).split(".")[0]) + 1 if segments else 1
        return self.path / f"{SEGMENT_PREFIX}{number:08d}.parquet"

    def delivered_backup(self, generation: int) -> Path:
        """Where a reset keeps the delivered rows it set aside."""
        return self.path / f"delivered.before-reset-{generation}.parquet"

    def dry_run_outbox(self, run_id: str) -> Path:
        """Where a dry run writes the request bodies it would have sent."""
        return self.dry_runs / f"{run_id}.jsonl"
