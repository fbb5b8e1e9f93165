"""The whole benchmark suite in one command, with the issue's targets checked.

Run: ./dev python -m benchmarks.run            # 1M rows everywhere, 10M for the diff and the track sync
     ./dev python -m benchmarks.run --quick    # 1M only (about 10 minutes on 2 cores)
     ./dev python -m benchmarks.run --smoke    # tiny sizes, one repeat: checks the benchmarks still run
Runs each benchmark (read, diff, send, build, end to end, code-location load, runs launched with `dg launch`),
which print their own tables and write benchmarks/results/*.json; then prints the targets and writes
benchmarks/results/summary.json.
Measure on a quiet machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks import (
    build_bench,
    diff_bench,
    e2e_bench,
    engine_bench,
    launch_bench,
    load_bench,
    read_bench,
    send_bench,
)

SCALES: dict[str, dict[str, Any]] = {
    "smoke": {
        "rows": 20_000,
        "big": None,
        "events": 20_000,
        "repeat": 1,
        "send": ["--in-flight", "4"],
        "launch": ["--rows", "20000", "--big-rows", "20000", "--many-rows", "2000", "--no-multiprocess"],
        "engine_rows": 20_000,
    },
    "quick": {
        "rows": 1_000_000,
        "big": None,
        "events": 200_000,
        "repeat": 3,
        "send": [],
        "launch": ["--rows", "1000000", "--big-rows", "1000000", "--many-rows", "20000"],
        "engine_rows": 1_000_000,
    },
    "full": {
        "rows": 1_000_000,
        "big": 10_000_000,
        "events": 200_000,
        "repeat": 3,
        "send": [],
        "launch": [],
        "engine_rows": 10_000_000,
    },
}


def run_suite(scale: str) -> dict[str, Any]:
    """Run every benchmark at a scale and return their results with the targets checked."""
    s = SCALES[scale]
    repeat = ["--repeat", str(s["repeat"])]
    results: dict[str, Any] = {"scale": scale, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["read"] = read_bench.main(["--rows", str(s["rows"]), *repeat])
    results["diff"] = [diff_bench.main(["--rows", str(s["rows"]), "--upgrade", "--mass", *repeat])]
    results["diff"] += [diff_bench.main(["--rows", str(s["big"]), *repeat])] if s["big"] else []
    results["send"] = send_bench.main(["--events", str(s["events"]), *repeat, *s["send"]])
    results["build"] = build_bench.main(["--rows", str(s["events"]), *repeat])
    results["e2e"] = [e2e_bench.main(["--sync", "identify", "--rows", str(s["rows"]), *repeat])]
    results["e2e"].append(e2e_bench.main(["--sync", "track", "--rows", str(s["big"] or s["rows"]), *repeat]))
    results["load"] = load_bench.main(["--syncs", "50", *repeat])
    results["launch"] = launch_bench.main(s["launch"])
    results["engine"] = engine_bench.main(["--rows", str(s["engine_rows"])])
    results["targets"] = targets(results)
    return results


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of the issue: what was measured and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for r in results["read"]["results"]:
        if r["path"] != "sqlalchemy":
            out[f"read {r['database']}: fast path >= 3x SQLAlchemy"] = _check(r["x_sqlalchemy"], 3, "x")
    for d in results["diff"]:
        methods = d["results"]
        floor, ours, duck = (methods[m] for m in diff_bench.METHODS)
        label = f"diff {d['rows']:,} rows"
        out[f"{label}: <= 2.5x the Parquet floor"] = _check(ours["seconds"] / floor["seconds"], 2.5, "x", lower=True)
        out[f"{label}: faster than DuckDB SQL"] = _check(duck["seconds"] / ours["seconds"], 1, "x")
        with_hashing = ours["seconds"] + diff_bench.writer_hashing_seconds(methods)
        out[f"{label}: faster than DuckDB SQL, counting the writer's hashing"] = _check(
            duck["seconds"] / with_hashing, 1, "x"
        )
        out[f"{label}: peak RSS <= 1.5 GB"] = _check(ours["rss_mb"], 1536, "MB", lower=True)
    send = results["send"]["summary"]
    out["send: >= 200,000 events/s end to end"] = _check(send["end_to_end_events_per_second"], 200_000, "/s")
    tuned = send["ratios_to_official"].get("tuned, 0 ms", {}).get("end_to_end", 0.0)
    out["send: >= 10x the official client (tuned)"] = _check(tuned, 10, "x")
    out["send: batches >= 95% full"] = _check(send["average_batch_fill"] * 100, 95, "%")
    for e in results["e2e"]:
        peak = max(run["rss_mb"] for run in e["results"].values())
        out[f"{e['sync']} sync of {e['rows']:,} rows: peak RSS <= 2 GB"] = _check(peak, 2048, "MB", lower=True)
    out["code location with 50 syncs loads < 2 s"] = _check(results["load"]["results"]["total"], 2, "s", lower=True)
    identify = results["launch"]["identify"]
    rows, floor = identify["rows"], identify["read_floor"]
    label = f"dg launch, identify sync of {rows:,} rows"
    out[f"{label}, no change: <= 2x the read floor + 2 s"] = _check(
        identify["runs"]["no change"]["wall"], 2 * floor + 2, "s", lower=True
    )
    official = identify["official"]["seconds"] / identify["runs"]["initial"]["wall"]
    out[f"{label}, initial: >= 8x the official client (tuned)"] = _check(official, 8, "x")
    engines = results["engine"]
    label = f"warehouse engine, {engines['rows']:,} rows in PostgreSQL, incremental run"
    warehouse, polars = engines["warehouse"]["incremental"], engines["polars"]["incremental"]
    share = warehouse["server_bytes"] / engines["model_bytes"] * 100
    out[f"{label}: reads <= 5% of the model's bytes"] = _check(share, 5, "%", lower=True)
    out[f"{label}: no slower than the Polars engine"] = _check(warehouse["wall"] / polars["wall"], 1, "x", lower=True)
    return out


def _check(value: float, target: float, unit: str, *, lower: bool = False) -> dict[str, Any]:
    met = value <= target if lower else value >= target
    return {"value": round(value, 3), "unit": unit, "target": target, "met": met}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smoke", action="store_const", dest="scale", const="smoke")
    group.add_argument("--quick", action="store_const", dest="scale", const="quick")
    args = parser.parse_args(argv)
    results = run_suite(args.scale or "full")
    print(f"\ntargets ({results['scale']} scale)")
    for name, t in results["targets"].items():
        print(f"  {'met    ' if t['met'] else 'NOT met'}  {name}: {t['value']:,} {t['unit']}")
    save_results("summary", results)
    return results


if __name__ == "__main__":
    main()
