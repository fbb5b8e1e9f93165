"""A small end-to-end benchmark: an N-row identify sync through the real assets into a local Segment emulator.

Run: ./dev python benchmarks/smoke.py [--rows 200000] [--repeat 3]
Prints the median wall time of each step (snapshot, diff, delivery) for an initial run and for a
run after 1% added, 1% removed and 2% changed rows, plus the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from segment_sync_tests.conftest import Warehouse, make_definitions  # noqa: E402

PROJECT = {
    "models": [{"name": "users", "table": "users", "primary_key": "user_id"}],
    "syncs": [
        {
            "name": "traits",
            "model": "users",
            "type": "identify",
            "user_id": "user_id",
            "fields": ["email", "plan", "seats", "score", "active", "signed_up_at", "region", "note"],
        }
    ],
}
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _seed(warehouse: Warehouse, rows: int) -> None:
    warehouse.execute(
        f"""create or replace table users as select
            'user-' || i as user_id, 'u' || i || '@example.com' as email,
            ['free', 'pro', 'team'][1 + i % 3] as plan, (i % 50)::integer as seats, i * 0.37 as score,
            i % 7 <> 0 as active, timestamp '2026-01-01' + to_seconds(i) as signed_up_at,
            ['eu', 'us', 'apac'][1 + i % 3] as region, case when i % 10 = 0 then null else 'n' || i end as note
        from range({rows}) t(i)"""
    )


def _change(warehouse: Warehouse, rows: int) -> None:
    warehouse.execute(
        "delete from users where hash(user_id) % 100 = 0",
        "update users set plan = 'enterprise' where hash(user_id) % 100 in (1, 2)",
        f"insert into users select 'new-' || i, 'n' || i || '@example.com', 'free', 1, 0.5, true,"
        f" timestamp '2026-11-01', 'eu', null from range({rows // 100}) t(i)",
    )


def _timed_run(definitions: dg.Definitions) -> dict[str, float]:
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = definitions.resolve_job_def("sync_traits").execute_in_process(instance=instance, run_config=QUIET)
        wall = time.perf_counter() - started
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}
    sent = result.asset_materializations_for_node("segment__traits")[0].metadata["events_sent"].value
    return {
        "snapshot": steps["snapshot__users"],
        "diff": steps["diff__traits"],
        "delivery": steps["segment__traits"],
        "wall": wall,
        "events": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"initial": [], "changes": []}
    emulator = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("emulator_process.py")), "bench"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = emulator.stdout.readline().strip()
    try:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ.update(
                    {
                        "SEGMENT_SYNC_STATE_DIR": f"{tmp}/state",
                        "SEGMENT_ENDPOINT": url,
                        "SEGMENT_WRITE_KEY": "bench",
                        "SEGMENT_DESTINATION": "http",
                    }
                )
                warehouse = Warehouse("duckdb", f"duckdb:///{tmp}/wh.duckdb")
                os.environ["WAREHOUSE_URL"] = warehouse.url
                _seed(warehouse, args.rows)
                definitions = make_definitions(PROJECT, segment={"max_attempts": 8})
                results["initial"].append(_timed_run(definitions))
                _change(warehouse, args.rows)
                results["changes"].append(_timed_run(definitions))
    finally:
        accepted, duplicates, discarded = emulator.communicate("")[0].split()
    expected = sum(r["events"] for runs in results.values() for r in runs)
    assert int(accepted) == expected and int(duplicates) == 0 and int(discarded) == 0, (accepted, expected)
    print(f"identify sync, {args.rows:,} rows, median of {args.repeat} (seconds)")
    print(f"{'run':<9}{'snapshot':>10}{'diff':>10}{'delivery':>10}{'wall':>10}{'events':>10}{'events/s':>12}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rate = med["events"] / med["delivery"] if med["delivery"] else 0
        print(
            f"{name:<9}{med['snapshot']:>10.2f}{med['diff']:>10.2f}{med['delivery']:>10.2f}{med['wall']:>10.2f}"
            f"{int(med['events']):>10,}{rate:>12,.0f}"
        )
    print(f"peak RSS of the syncing process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
