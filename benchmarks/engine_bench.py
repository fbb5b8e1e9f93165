"""Engine benchmark: the Polars engine against the warehouse engine on a PostgreSQL model, launched with `dg launch`.

Run: ./dev python -m benchmarks.engine_bench [--rows 10000000] [--keys random]
A track sync (send_initial off, as a track sync usually is) of a model in PostgreSQL, in a fresh project per
engine: its baseline, then 1% of the rows added, 1% removed and 2% changed, and the incremental run timed (the
model vacuumed once seeded and once changed, so that neither engine is the first to read its new pages).
Beside each run: its wall time, the bytes PostgreSQL sent the run (counted by a TCP relay the run connects
through) and the run's peak memory (the `dg launch` process and the steps it runs, in_process). The model's own
bytes are what one read of it moves (the Polars engine's snapshot reads it whole). Writes
benchmarks/results/engine-<rows>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.e2e_bench import FIELDS
from benchmarks.emulator_process import EmulatorProcesses
from benchmarks.launch_bench import latest_run
from segment_sync_tests.support.dg_project import dg_command, worker_environment, write_project
from segment_sync_tests.support.warehouses import POSTGRES_ADMIN_URL

WRITE_KEY = "bench_write_key_0123456789abcdef"
ENGINES = ("polars", "warehouse")
EVENTS = {"added": "User Added", "changed": "User Changed", "removed": "User Removed"}


class ByteCounter:
    """A TCP relay on 127.0.0.1 to the PostgreSQL server, counting the bytes the server sends its clients."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.server_bytes = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        """The bytes counted since the last call."""
        with self._lock:
            counted, self.server_bytes = self.server_bytes, 0
        return counted

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
                if count:
                    with self._lock:
                        self.server_bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


KEYS = {"ordered": "'{prefix}' || i", "random": "md5('{prefix}' || i)"}


def seed(engine: sa.Engine, schema: str, rows: int, keys: str = "ordered") -> None:
    """`<schema>.users`: a text key and eight columns of common types, as the DuckDB benchmarks seed. Its keys are
    `user-<n>` (`ordered`: in the order rows are made) or their md5 (`random`, as hashes and UUIDs are)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
        conn.execute(
            sa.text(
                f"""create table {schema}.users as select
                {KEYS[keys].format(prefix="user-")} as user_id, 'u' || i || '@example.com' as email,
                (array['free', 'pro', 'team'])[1 + i % 3] as plan, (i % 50)::integer as seats,
                (i * 0.37)::numeric(18, 2) as score, i % 7 <> 0 as active,
                timestamp '2026-01-01' + i * interval '1 second' as signed_up_at,
                (array['eu', 'us', 'apac'])[1 + i % 3] as region,
                case when i % 10 = 0 then null else 'n' || i end as note
                from generate_series(0, {rows - 1}) i"""
            )
        )
    settle(engine, schema)


def change(engine: sa.Engine, schema: str, rows: int, keys: str = "ordered") -> None:
    """1% of the rows removed, 2% changed and 1% added."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"delete from {schema}.users where abs(hashtext(user_id)) % 100 = 0"))
        conn.execute(
            sa.text(f"update {schema}.users set plan = 'enterprise' where abs(hashtext(user_id)) % 100 in (1, 2)")
        )
        conn.execute(
            sa.text(
                f"insert into {schema}.users select {KEYS[keys].format(prefix='new-')}, 'n' || i || '@example.com',"
                " 'free', 1, 0.5, true, timestamp '2026-11-01', 'eu', null"
                f" from generate_series(0, {rows // 100 - 1}) i"
            )
        )
    settle(engine, schema)


def settle(engine: sa.Engine, schema: str) -> None:
    """`VACUUM (ANALYZE)` of the model, so that no engine's run is the first to read its changed pages: that reader
    pays for setting their hint bits and pruning them (4.2 s of a 9.5 s scan at 10M rows, against 5.3 s after)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM (ANALYZE) {schema}.users"))


def run(folder: Path, env: dict[str, str], counter: ByteCounter) -> dict[str, Any]:
    """`dg launch` of the sync's job: wall time, bytes PostgreSQL sent, peak memory of the launching process."""
    counter.take()
    started = time.perf_counter()
    process = subprocess.Popen(
        dg_command("launch", "--job", "sync_lifecycle"),
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = RssSampler(process.pid)
    output = process.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    sampler.stop()
    if status:
        raise RuntimeError(f"the run failed:\n{output[:3000]}\n...\n{output[-3000:]}")
    run_record, _, steps, sent, state = latest_run(env)
    return {
        "wall": wall,
        "server_bytes": counter.take(),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_rss_mb_by_step": sampler.peaks_by_step(step_times(env, run_record.run_id)),
        "steps": steps,
        "events": sent,
        "state": state,
    }


class RssSampler:
    """The resident memory of a process, sampled every 20 ms from /proc with the wall clock's time."""

    def __init__(self, pid: int):
        self.samples: list[tuple[float, int]] = []
        self._status = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            try:
                text = self._status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.time(), int(line.split()[1]) * 1024))

    def stop(self) -> None:
        """Stop sampling."""
        self._done.set()
        self._thread.join()

    def peaks_by_step(self, steps: dict[str, tuple[float, float]]) -> dict[str, float]:
        """The highest sample within each step's start and end, in MB."""
        return {
            step: round(max((rss for t, rss in self.samples if start <= t <= end), default=0) / 1e6, 1)
            for step, (start, end) in steps.items()
        }


def step_times(env: dict[str, str], run_id: str) -> dict[str, tuple[float, float]]:
    """Each step of a run with its start and end (Unix time)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return {s.step_key: (s.start_time, s.end_time) for s in instance.get_run_step_stats(run_id)}


def model_bytes(url: str, schema: str, counter: ByteCounter) -> int:
    """The bytes one read of the whole model moves (through COPY, as the Polars engine's snapshot reads it)."""
    import psycopg

    counter.take()
    statement = f"COPY (select * from {schema}.users) TO STDOUT (FORMAT binary)"
    with (
        psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn,
        conn.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        for _ in copy:
            pass
    return counter.take()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both engines on one PostgreSQL model, baseline then incremental; print and save the figures."""
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--keys", choices=list(KEYS), default="ordered", help="the model's keys: user-<n> or md5")
    args = parser.parse_args(argv)
    admin = sa.create_engine(POSTGRES_ADMIN_URL)
    base = sa.make_url(POSTGRES_ADMIN_URL)
    counter = ByteCounter(base.host or "127.0.0.1", base.port or 5432)
    relayed = base.set(host="127.0.0.1", port=counter.port).render_as_string(hide_password=False)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"rows": args.rows, "keys": args.keys}
    try:
        seed(admin, schema, args.rows, args.keys)
        out["model_bytes"] = model_bytes(relayed, schema, counter)
        with EmulatorProcesses(WRITE_KEY, processes=2) as emulator, tempfile.TemporaryDirectory() as tmp:
            projects = {}
            for engine in args.engines:
                folder = Path(tmp) / engine
                sync = {
                    "name": "lifecycle",
                    "model": "users",
                    "type": "track",
                    "user_id": "user_id",
                    "fields": FIELDS,
                    "events": EVENTS,
                    "engine": engine,
                }
                write_project(
                    folder,
                    {
                        "executor": "in_process",
                        "warehouse": {"kind": "postgres", "state_schema": f"{schema}_state"},
                        "models": [{"name": "users", "table": f"{schema}.users", "primary_key": "user_id"}],
                        "syncs": [sync],
                    },
                )
                env = worker_environment(
                    folder,
                    folder / "home",
                    folder / "state",
                    WAREHOUSE_URL=relayed,
                    SEGMENT_ENDPOINT=emulator.url,
                    SEGMENT_WRITE_KEY=WRITE_KEY,
                    SEGMENT_DESTINATION="http",
                )
                projects[engine] = (folder, env)
                out[engine] = {"baseline": run(folder, env, counter)}
            change(admin, schema, args.rows, args.keys)
            emulator.reset()
            for engine, (folder, env) in projects.items():
                out[engine]["incremental"] = run(folder, env, counter)
            out["events"] = emulator.counts()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop schema if exists {schema} cascade"))
            conn.execute(sa.text(f"drop schema if exists {schema}_state cascade"))
        admin.dispose()
    _print(out)
    save_results(f"engine-{args.rows}" + ("" if args.keys == "ordered" else f"-{args.keys}"), out)
    return out


def _print(out: dict[str, Any]) -> None:
    model = out["model_bytes"]
    print(
        f"engines: {out['rows']:,} rows in PostgreSQL, {out['keys']} keys; one read of the model: {model / 1e6:,.1f} MB"
    )
    print(f"{'engine':<10} {'run':<12} {'wall s':>8} {'MB read':>9} {'of model':>9} {'peak MB':>8}  steps (s)")
    for engine in (e for e in ENGINES if e in out):
        for name, r in out[engine].items():
            share = r["server_bytes"] / model if model else 0
            print(
                f"{engine:<10} {name:<12} {r['wall']:>8.2f} {r['server_bytes'] / 1e6:>9.1f} {share:>8.1%} "
                f"{r['peak_rss_mb']:>8.0f}  " + ", ".join(f"{k.split('__')[0]} {v:.2f}" for k, v in r["steps"].items())
            )
            peaks = ", ".join(f"{k.split('__')[0]} {v:,.0f}" for k, v in r["peak_rss_mb_by_step"].items())
            print(f"{'':<23} peak MB by step: {peaks}")
    print(f"events accepted by the emulator in the incremental runs: {out['events']['accepted']:,}")


if __name__ == "__main__":
    main()
