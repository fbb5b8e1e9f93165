"""Runs the Segment emulator in processes of its own, so it shares neither the GIL nor a core with the sender.

Several processes listen on one port (SO_REUSEPORT, the kernel spreads connections over them); counts
are summed and duplicates are counted across all of them.

As a script: `python -m benchmarks.emulator_process WRITE_KEY [--processes N] [--latency-seconds S]` prints
its URL on the first line of stdout and, when stdin closes, "accepted duplicates discarded" on the next line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from segment_sync_tests.support.segment_emulator import SegmentEmulator


class EmulatorProcesses:
    """One or more emulator processes on one port of 127.0.0.1, that keep counts and messageIds only."""

    def __init__(self, write_key: str, *, processes: int = 1, latency_seconds: float = 0.0):
        self.write_key = write_key
        self.processes = processes
        self.latency_seconds = latency_seconds
        self.url = ""
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def start(self) -> EmulatorProcesses:
        """Start the processes and wait until each one listens."""
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs Polars' threads
        with socket.socket() as reserved:  # holds a free port until every worker has bound it too
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind(("127.0.0.1", 0))
            port = reserved.getsockname()[1]
            for _ in range(self.processes):
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_serve, args=(theirs, self.write_key, port, self.latency_seconds), daemon=True
                )
                process.start()
                theirs.close()  # so a worker that dies before answering raises EOFError here, not a hang
                self._workers.append((process, ours))
            urls = {conn.recv() for _, conn in self._workers}
        (self.url,) = urls
        return self

    def stop(self) -> None:
        """Stop every process."""
        for process, conn in self._workers:
            with contextlib.suppress(OSError):  # already gone
                conn.send(("stop", None))
            process.join(timeout=10)
            conn.close()
        self._workers = []

    def __enter__(self) -> EmulatorProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counts(self) -> dict[str, int]:
        """Requests, accepted and discarded events, and duplicate messageIds across all processes."""
        totals = {"requests": 0, "accepted": 0, "discarded": 0}
        ids: set[str] = set()
        for counts in self._ask("counts"):
            for name in totals:
                totals[name] += counts[name]
        for worker_ids in self._ask("ids"):
            ids |= worker_ids
        return {**totals, "duplicates": totals["accepted"] - len(ids)}

    def counts_by_process(self) -> list[dict[str, int]]:
        """Each process's own counts (duplicates only within it), to see how the kernel spread connections."""
        return self._ask("counts")

    def cpu_seconds(self) -> float:
        """CPU time the processes have used so far, together."""
        return sum(self._ask("cpu"))

    def reset(self) -> None:
        """Forget every count and messageId."""
        self._ask("reset")

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by this much from now on."""
        self.latency_seconds = seconds
        self._ask("latency", seconds)

    def _ask(self, command: str, argument: Any = None) -> list[Any]:
        for _, conn in self._workers:
            conn.send((command, argument))
        return [conn.recv() for _, conn in self._workers]


def _serve(conn: Connection, write_key: str, port: int, latency_seconds: float) -> None:
    gc.disable()  # collections would walk the growing set of messageIds, for nothing
    emulator = SegmentEmulator(write_key, record=False, latency_seconds=latency_seconds, port=port, reuse_port=True)
    with emulator:
        conn.send(emulator.url)
        while True:
            try:
                command, argument = conn.recv()
            except EOFError:
                return
            if command == "stop":
                return
            if command == "counts":
                conn.send(emulator.counts())
            elif command == "ids":
                conn.send(emulator.message_ids())
            elif command == "reset":
                emulator.reset()
                conn.send(None)
            elif command == "latency":
                emulator.latency_seconds = argument
                conn.send(None)
            elif command == "cpu":
                conn.send(time.process_time())


def main(argv: list[str] | None = None) -> None:
    """Serve until stdin closes, then print the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("write_key")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)
    with EmulatorProcesses(args.write_key, processes=args.processes, latency_seconds=args.latency_seconds) as emu:
        print(emu.url, flush=True)
        sys.stdin.read()
        counts = emu.counts()
        print(counts["accepted"], counts["duplicates"], counts["discarded"], flush=True)


if __name__ == "__main__":
    main()
