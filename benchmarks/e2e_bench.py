"""End-to-end benchmark: a sync through the real Dagster assets, from a DuckDB warehouse to the Segment emulator.

Run: ./dev python -m benchmarks.e2e_bench [--sync identify|track] [--rows 1000000] [--repeat 3]
Each repeat starts from an empty state: an initial run, then a run after 1% of rows were removed, 1% added
and 2% changed. The identify sync sends every row on its initial run; the track sync (send_initial off, as a
track sync usually is) records its baseline, then sends an event per change. The warehouse is seeded and
changed in processes of their own and every run executes in a fresh process, so the peak RSS reported is the
sync's own. Prints a table and writes benchmarks/results/e2e-<sync>-<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.emulator_process import EmulatorProcesses

WRITE_KEY = "bench_write_key_0123456789abcdef"
FIELDS = ["email", "plan", "seats", "score", "active", "signed_up_at", "region", "note"]
SYNCS = {
    "identify": {"name": "traits", "model": "users", "type": "identify", "user_id": "user_id", "fields": FIELDS},
    "track": {
        "name": "lifecycle",
        "model": "users",
        "type": "track",
        "user_id": "user_id",
        "fields": FIELDS,
        "events": {"added": "User Added", "changed": "User Changed", "removed": "User Removed"},
        "timestamp": "signed_up_at",
    },
}
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def seed_users(url: str, rows: int, table: str = "users") -> None:
    """A table of `rows` users in a DuckDB file: a string key and eight columns of common types."""
    import duckdb

    with duckdb.connect(url.removeprefix("duckdb:///")) as conn:
        conn.execute(
            f"""create or replace table {table} as select
                'user-' || i as user_id, 'u' || i || '@example.com' as email,
                ['free', 'pro', 'team'][1 + i % 3] as plan, (i % 50)::integer as seats, i * 0.37 as score,
                i % 7 <> 0 as active, timestamp '2026-01-01' + to_seconds(i) as signed_up_at,
                ['eu', 'us', 'apac'][1 + i % 3] as region, case when i % 10 = 0 then null else 'n' || i end as note
            from range({rows}) t(i)"""
        )


def change_users(url: str, rows: int, table: str = "users") -> None:
    """1% of the rows removed, 2% changed and 1% added."""
    import duckdb

    with duckdb.connect(url.removeprefix("duckdb:///")) as conn:
        conn.execute(f"delete from {table} where hash(user_id) % 100 = 0")
        conn.execute(f"update {table} set plan = 'enterprise' where hash(user_id) % 100 in (1, 2)")
        conn.execute(
            f"insert into {table} select 'new-' || i, 'n' || i || '@example.com', 'free', 1, 0.5, true,"
            f" timestamp '2026-11-01', 'eu', null from range({rows // 100}) t(i)"
        )


def _run(sync_kind: str) -> None:
    """Run the sync's job once in this process; print step times, events sent and this process's peak RSS."""
    import dagster as dg

    from benchmarks.measure import peak_rss_mb
    from segment_sync_tests.support.sync_runs import make_definitions

    sync = SYNCS[sync_kind]
    project = {"models": [{"name": "users", "table": "users", "primary_key": "user_id"}], "syncs": [sync]}
    segment = {"max_attempts": 8, "max_retry_seconds": 600, "timeout_seconds": 30}
    definitions = make_definitions(project, segment=segment)
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        job = definitions.resolve_job_def(f"sync_{sync['name']}")
        result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
        wall = time.perf_counter() - started
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}
    if not result.success:
        raise SystemExit(f"the sync failed: {[e.message for e in result.all_events if e.is_failure]}")
    meta = result.asset_materializations_for_node(f"segment__{sync['name']}")[0].metadata
    out = {
        "snapshot": steps["snapshot__users"],
        "diff": steps[f"diff__{sync['name']}"],
        "delivery": steps[f"segment__{sync['name']}"],
        "wall": wall,
        "events": meta["events_sent"].value,
        "rss_mb": peak_rss_mb(),
    }
    print(json.dumps(out))


def _child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e_bench", *args], capture_output=True, text=True, env=os.environ
    )
    if out.returncode:
        raise RuntimeError(f"{args[0]} failed: {out.stderr[-2000:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--sync", choices=sorted(SYNCS), default="identify")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"initial": [], "changes": []}
    with EmulatorProcesses(WRITE_KEY) as emulator:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"duckdb:///{tmp}/warehouse.duckdb"
                os.environ.update(
                    {
                        "SEGMENT_SYNC_STATE_DIR": f"{tmp}/state",
                        "SEGMENT_ENDPOINT": emulator.url,
                        "SEGMENT_WRITE_KEY": WRITE_KEY,
                        "SEGMENT_DESTINATION": "http",
                        "WAREHOUSE_URL": url,
                    }
                )
                _child("--seed", url, str(args.rows))
                runs["initial"].append(_child("--run", args.sync))
                _child("--change", url, str(args.rows))
                runs["changes"].append(_child("--run", args.sync))
        counts = emulator.counts()
    sent = sum(r["events"] for rs in runs.values() for r in rs)
    assert counts["accepted"] == sent and counts["duplicates"] == 0 and counts["discarded"] == 0, (counts, sent)
    keys = ("snapshot", "diff", "delivery", "wall", "events", "rss_mb")
    results = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    print(f"{args.sync} sync, {args.rows:,} rows, through the Dagster assets, median of {args.repeat} (seconds)")
    header = ("snapshot", 10), ("diff", 8), ("delivery", 10), ("wall", 8), ("events", 11), ("events/s", 10)
    print(f"{'run':<9}" + "".join(f"{name:>{width}}" for name, width in header) + f"{'RSS MB':>9}")
    for name, r in results.items():
        rate = r["events"] / r["delivery"] if r["delivery"] else 0
        print(
            f"{name:<9}{r['snapshot']:>10.2f}{r['diff']:>8.2f}{r['delivery']:>10.2f}{r['wall']:>8.2f}"
            f"{int(r['events']):>11,}{rate:>10,.0f}{r['rss_mb']:>9,.0f}"
        )
    summary = {"sync": args.sync, "rows": args.rows, "repeat": args.repeat, "results": results}
    save_results(f"e2e-{args.sync}-{args.rows}", summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--seed":
        seed_users(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--change":
        change_users(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--run":
        _run(sys.argv[2])
    else:
        main()
