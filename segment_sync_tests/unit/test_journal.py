"""The journal's writer thread: appends in order, durable on close, never in the sender's way, failures reported."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl
import pytest

from segment_sync.storage import journal as journal_module
from segment_sync.storage.journal import FileSink, Journal, JournalError
from segment_sync.storage.state import StateError, SyncState
from segment_sync.values.row_columns import CONTENT, HASH, KEY


def journal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "segment-sync-journal"]


def test_appends_are_written_in_order_and_close_stops_the_thread(tmp_path: Path) -> None:
    journal = Journal(FileSink(tmp_path / "journal.jsonl"))
    for i in range(500):
        journal.append(f"{i}\n".encode())
    journal.append(b"")
    journal.close()
    assert (tmp_path / "journal.jsonl").read_bytes() == b"".join(f"{i}\n".encode() for i in range(500))
    assert not journal_threads()
    journal.append(b"500\n")  # a closed journal opens again
    journal.close()
    assert (tmp_path / "journal.jsonl").read_bytes().endswith(b"499\n500\n")


def test_an_append_does_not_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        fsyncs.append(fd)

    monkeypatch.setattr(journal_module.os, "fsync", slow_fsync)
    journal = Journal(FileSink(tmp_path / "journal.jsonl"))
    started = time.perf_counter()
    for i in range(5):
        journal.append(f"{i}\n".encode())
    queued = time.perf_counter() - started
    journal.close()
    closed = time.perf_counter() - started
    assert queued < 0.15 < 0.3 <= closed
    assert 1 <= len(fsyncs) <= 2  # appends that waited together share one write and one fsync
    assert journal.busy_seconds >= 0.3


def test_a_failed_write_is_reported(tmp_path: Path) -> None:
    journal = Journal(FileSink(tmp_path / "missing" / "journal.jsonl"))
    journal.append(b"a\n")
    with pytest.raises(JournalError, match="could not be written: .*No such file"):
        journal.close()
    with pytest.raises(JournalError):
        journal.append(b"b\n")
    assert not journal_threads()


def test_the_lock_waits_for_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = SyncState(tmp_path / "syncs" / "s", "s")
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: time.sleep(0.2))
    rows = pl.DataFrame({KEY: ["a"], CONTENT: ["x"], HASH: [1]}, schema_overrides={HASH: pl.UInt64})
    with state.lock():
        state.begin_run()
        state.record_lines(line.encode() for line in state.journal_lines(rows))
    assert state.journal_path.read_bytes().count(b"\n") == 1 and not journal_threads()


def test_a_journal_that_cannot_be_written_fails_the_run_with_the_sync_named(tmp_path: Path) -> None:
    state = SyncState(tmp_path / "syncs" / "s", "s")
    state.begin_run()
    state.journal_path.mkdir()  # a folder where the file should be
    rows = pl.DataFrame({KEY: ["a"], CONTENT: ["x"], HASH: [1]}, schema_overrides={HASH: pl.UInt64})
    with pytest.raises(StateError, match="sync 's': the journal .* could not be written"):
        state.record(rows)
