"""A run's journal, appended to by a thread of its own (a file, fsynced, or a table), so sending never waits."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import BinaryIO, Protocol

MAX_QUEUED = 64  # appends waiting for the disk; past this, `append` waits (their lines are held in memory)


class JournalError(OSError):
    """The journal could not be written: the rows it held are sent again by the next run, with the same messageIds."""


class JournalSink(Protocol):
    """Where a journal's bytes go: `write` makes them durable; `close` lets go of what it holds."""

    name: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """A journal file: appended to, then fsynced, on every write."""

    def __init__(self, path: Path):
        self.name = str(path)
        self.path = path
        self._handle: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        """Append and fsync."""
        self._handle = self._handle or open(self.path, "ab")  # noqa: SIM115 - held open until close
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Journal:
    """Appends through a sink from a background thread: one write for all the appends waiting.

    What was appended is durable once `close` returns. A row acknowledged but not yet durable when the process
    dies is sent again by the next run under the same messageId, which Segment deduplicates.
    """

    def __init__(self, sink: JournalSink):
        self.sink = sink
        self.busy_seconds = 0.0  # the thread's time writing and fsyncing
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUED)  # None: stop
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    def append(self, data: bytes) -> None:
        """Queue bytes for the file (written in order, soon after); raise `JournalError` if a write failed."""
        self._raise_error()
        if not data:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_all, name="segment-sync-journal", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def close(self) -> None:
        """Wait until every append is on disk and stop the thread; raise `JournalError` if one could not be written."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise JournalError(f"the journal {self.sink.name} could not be written: {self._error}") from self._error

    def _write_all(self) -> None:
        try:
            while True:
                items = [self._queue.get()]
                while items[-1] is not None:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                data = b"".join(item for item in items if item is not None)
                if data and self._error is None:
                    started = time.perf_counter()
                    try:
                        self.sink.write(data)
                    except Exception as exc:  # noqa: BLE001 - reported to the run by the next append or close
                        self._error = exc  # later appends are drained, not written; the fold drops a torn last line
                    self.busy_seconds += time.perf_counter() - started
                if items[-1] is None:
                    return
        finally:
            self.sink.close()
