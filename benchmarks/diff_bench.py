"""Diff benchmark: our keyed diff next to the Parquet read floor and the same diff in DuckDB SQL.

Run: ./dev python benchmarks/diff_bench.py [--rows 1000000] [--repeat 3]
Two snapshots of a synthetic model (string key + 10 columns) differ by 1% removed, 1% added and 2%
changed rows. Each method runs in its own process, so peak RSS is the method's own. Prints a table and
writes benchmarks/results/diff.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ["plan", "seats", "score", "active", "signed_up_at", "region", "note", "city", "age", "balance"]


def make_snapshots(folder: Path, rows: int) -> tuple[Path, Path]:
    """Write the old and the new snapshot as Parquet."""
    import duckdb

    old, new = folder / "old.parquet", folder / "new.parquet"
    base = f"""select 'user-' || i as user_id, ['free','pro','team'][1 + i % 3] as plan, (i % 50)::integer as seats,
        i * 0.37 as score, i % 7 <> 0 as active, timestamp '2026-01-01' + to_seconds(i) as signed_up_at,
        ['eu','us','apac'][1 + i % 3] as region, case when i % 10 = 0 then null else 'n' || i end as note,
        'city-' || (i % 1000) as city, (18 + i % 60)::integer as age, (i % 100000) * 1.25 as balance
        from range({rows}) t(i)"""
    with duckdb.connect() as conn:
        conn.execute(f"copy ({base}) to '{old}' (format parquet)")
        conn.execute(
            f"""copy (select * replace (case when hash(user_id) % 100 in (1, 2) then 'enterprise' else plan end as plan)
                from ({base}) where hash(user_id) % 100 <> 0
                union all select 'new-' || i, 'free', 1, 0.5, true, timestamp '2026-11-01', 'eu', null, 'x', 30, 0.0
                from range({rows // 100}) t(i)) to '{new}' (format parquet)"""
        )
    return old, new


def floor(old: Path, new: Path) -> int:
    """Read both snapshots, nothing else."""
    import polars as pl

    return pl.read_parquet(old).height + pl.read_parquet(new).height


def ours(old: Path, new: Path) -> int:
    """segment-sync's diff: canonical contents of the sent columns, then the keyed join."""
    import polars as pl

    from segment_sync.diff import CONTENT, GEN, KEY, compute_diff, current_contents

    delivered = current_contents(pl.read_parquet(old), ["user_id"], COLUMNS).with_columns(pl.lit(1).alias(GEN))
    current = current_contents(pl.read_parquet(new), ["user_id"], COLUMNS)
    return compute_diff(current, delivered.select(KEY, CONTENT, GEN).lazy()).height


def duckdb_sql(old: Path, new: Path) -> int:
    """The same keyed diff as DuckDB SQL over the files (a hash of the sent columns per row)."""
    import duckdb

    cols = ", ".join(COLUMNS)
    query = f"""
        with o as (select user_id, hash({cols}) h from '{old}'), n as (select user_id, hash({cols}) h from '{new}')
        select count(*) from o full join n using (user_id) where o.h is distinct from n.h"""
    with duckdb.connect() as conn:
        return conn.execute(query).fetchone()[0]


METHODS = {"parquet read (floor)": floor, "segment-sync diff": ours, "DuckDB SQL diff": duckdb_sql}


def _child(method: str, old: str, new: str) -> None:
    started = time.perf_counter()
    rows = METHODS[method](Path(old), Path(new))
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        old, new = make_snapshots(Path(tmp), args.rows)
        for method in METHODS:
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", method, str(old), str(new)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(out.stdout))
            results[method] = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "rss_mb")}
    floor_seconds = results["parquet read (floor)"]["seconds"]
    print(f"keyed diff, {args.rows:,} rows x {len(COLUMNS)} columns, median of {args.repeat}")
    print(f"{'method':<24}{'seconds':>10}{'x floor':>10}{'peak RSS MB':>14}")
    for method, r in results.items():
        print(f"{method:<24}{r['seconds']:>10.2f}{r['seconds'] / floor_seconds:>10.1f}{r['rss_mb']:>14,.0f}")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "diff.json").write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        _child(*sys.argv[2:5])
    else:
        main()
