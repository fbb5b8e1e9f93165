"""Diff benchmark: our keyed diff next to the Parquet read floor and the same diff in DuckDB SQL.

Run: ./dev python -m benchmarks.diff_bench [--rows 1000000] [--repeat 3] [--upgrade] [--mass]
Two snapshots of a synthetic model (string key + 10 columns) differ by 1% removed, 1% added and 2%
changed rows. The floor reads both snapshots; our diff reads the new snapshot and the sync's state as the
first run left it (made from the old snapshot before timing) and writes the diff file the delivery reads;
DuckDB hashes the sent columns of both snapshots and joins them on the key. Each method runs in its own
process, so peak RSS is the method's own. With --upgrade, also times (once) our diff when the stored hashes
are another version's, as after an upgrade of Polars; with --mass, (once) when every row changed. Prints a
table and writes benchmarks/results/diff-<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ["plan", "seats", "score", "active", "signed_up_at", "region", "note", "city", "age", "balance"]


def make_snapshots(folder: Path, rows: int) -> tuple[Path, Path]:
    """Write the old and the new snapshot as Parquet, and the state a sync holds after delivering the old one."""
    import duckdb
    import polars as pl

    from segment_sync.diff.keyed_diff import delivered_rows
    from segment_sync.storage.state import write_parquet_atomic

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
    write_parquet_atomic(delivered_rows(pl.scan_parquet(old), ["user_id"], COLUMNS, 1), folder / "state.parquet")
    _add_row_hashes(new)
    return old, new


def _add_row_hashes(path: Path) -> None:
    """Add the sync's row hashes to a snapshot file, as segment-sync's snapshot writer does."""
    import polars as pl

    from segment_sync.snapshot.row_hash import with_row_hashes

    plain = path.with_name(PLAIN_PREFIX + path.name)
    path.rename(plain)
    with_row_hashes(pl.scan_parquet(plain), ["user_id"], [COLUMNS]).sink_parquet(path, compression="snappy")


def snapshot_write(old: Path, new: Path, *, hashed: bool = False) -> int:
    """Write the new snapshot as the snapshot writer does after reading it (Parquet, lz4), without row hashes."""
    import polars as pl

    from segment_sync.snapshot.row_hash import with_row_hashes
    from segment_sync.storage.state import COMPRESSION

    frame = pl.scan_parquet(new.with_name(PLAIN_PREFIX + new.name))
    if hashed:
        frame = with_row_hashes(frame, ["user_id"], [COLUMNS])
    out = new.with_name("written.parquet")
    frame.sink_parquet(out, compression=COMPRESSION)
    return pl.scan_parquet(out).select(pl.len()).collect().item()


def snapshot_write_hashed(old: Path, new: Path) -> int:
    """The same write with the sync's row hashes added: what hashing costs the snapshot writer."""
    return snapshot_write(old, new, hashed=True)


def floor(old: Path, new: Path) -> int:
    """Read both snapshots, nothing else."""
    import polars as pl

    columns = ["user_id", *COLUMNS]  # the model's, not the row hashes the writer added
    return pl.read_parquet(old, columns=columns).height + pl.read_parquet(new, columns=columns).height


def ours(old: Path, new: Path, *, trust_hashes: bool = True) -> int:
    """segment-sync's diff of the new snapshot against the sync's state, written to a Parquet file."""
    import polars as pl

    from segment_sync.diff.keyed_diff import UNCHANGED, compute_diff
    from segment_sync.storage.state import sink_parquet_atomic
    from segment_sync.values.row_columns import KIND

    out = new.with_name("diff.parquet")
    state = pl.scan_parquet(old.with_name("state.parquet"))
    sink_parquet_atomic(compute_diff(pl.scan_parquet(new), ["user_id"], COLUMNS, state, trust_hashes=trust_hashes), out)
    return pl.scan_parquet(out).filter(pl.col(KIND) != UNCHANGED).select(pl.len()).collect().item()


def ours_after_upgrade(old: Path, new: Path) -> int:
    """The same diff when the stored hashes were made by another version (once after an upgrade): every row
    is compared by content, in slices of keys."""
    return ours(old, new, trust_hashes=False)


def make_mass_change(old: Path) -> None:
    """Write a snapshot in which every row changed (as after a backfill of one column), beside the old one."""
    import duckdb

    with duckdb.connect() as conn:
        changed = f"select * replace (seats + 1 as seats) from '{old}'"
        conn.execute(f"copy ({changed}) to '{old.with_name(MASS_FILE)}' (format parquet)")
    _add_row_hashes(old.with_name(MASS_FILE))


def ours_mass_change(old: Path, new: Path) -> int:
    """Our diff when every row changed: more candidates than are held at once, so worked out in key slices."""
    return ours(old, new.with_name(MASS_FILE))


def duckdb_sql(old: Path, new: Path) -> int:
    """The same keyed diff as DuckDB SQL over the files: a hash of the sent columns per row, joined on the key,
    and the changed rows (kind and new values) written to Parquet."""
    import duckdb

    cols = ", ".join(COLUMNS)
    out = new.with_name("duckdb_diff.parquet")
    query = f"""
        with o as (select user_id, hash({cols}) h from '{old}'), n as (select *, hash({cols}) h from '{new}')
        select coalesce(n.user_id, o.user_id) as user_id,
            case when o.user_id is null then 'added' when n.user_id is null then 'removed' else 'changed' end as kind,
            {", ".join(f"n.{c}" for c in COLUMNS)}
        from o full join n on o.user_id = n.user_id where o.h is distinct from n.h"""
    with duckdb.connect() as conn:
        conn.execute(f"copy ({query}) to '{out}' (format parquet)")
        return conn.execute(f"select count(*) from '{out}'").fetchone()[0]


METHODS = {"parquet read (floor)": floor, "segment-sync diff": ours, "DuckDB SQL diff": duckdb_sql}
WRITES = {"snapshot write": snapshot_write, "snapshot write + row hashes": snapshot_write_hashed}
PLAIN_PREFIX = "plain-"  # a snapshot as read, before the writer added row hashes
UPGRADE = "segment-sync, after an upgrade"  # measured once, with --upgrade: it is slow by design
MASS = "segment-sync, every row changed"  # measured once, with --mass
MASS_FILE = "mass.parquet"
ONCE = {UPGRADE: ours_after_upgrade, MASS: ours_mass_change}


def writer_hashing_seconds(results: dict[str, dict]) -> float:
    """What adding the row hashes costs the snapshot writer: the diff's hashing, moved there."""
    return max(0.0, results["snapshot write + row hashes"]["seconds"] - results["snapshot write"]["seconds"])


def _child(method: str, old: str, new: str) -> None:
    import duckdb  # noqa: F401 - imports are not what is measured
    import polars  # noqa: F401

    import segment_sync.diff.keyed_diff  # noqa: F401
    from benchmarks.measure import peak_rss_mb

    started = time.perf_counter()
    rows = {**METHODS, **WRITES, **ONCE}[method](Path(old), Path(new))
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "rows": rows}))


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--upgrade", action="store_true", help="also time the diff against hashes of another version")
    parser.add_argument("--mass", action="store_true", help="also time the diff when every row changed")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old, new = make_snapshots(Path(tmp), args.rows)
        if args.mass:
            make_mass_change(old)
        once = [*([UPGRADE] if args.upgrade else []), *([MASS] if args.mass else [])]
        runs: dict[str, list[dict]] = {method: [] for method in [*METHODS, *WRITES, *once]}
        for repeat in range(args.repeat):  # methods take turns, so a slow spell of the machine hits them alike
            for method in runs:
                if method in ONCE and repeat > 0:
                    continue
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.diff_bench", "--child", method, str(old), str(new)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[method].append(json.loads(out.stdout))
        for method, measured in runs.items():
            results[method] = {k: statistics.median(r[k] for r in measured) for k in ("seconds", "rss_mb")}
            results[method]["rows_out"] = measured[0]["rows"]
    floor_seconds = results["parquet read (floor)"]["seconds"]
    print(f"keyed diff, {args.rows:,} rows x {len(COLUMNS)} columns, median of {args.repeat}")
    print(f"{'method':<32}{'seconds':>10}{'x floor':>10}{'peak RSS MB':>14}")
    for method, r in results.items():
        print(f"{method:<32}{r['seconds']:>10.2f}{r['seconds'] / floor_seconds:>10.1f}{r['rss_mb']:>14,.0f}")
    hashing = writer_hashing_seconds(results)
    ours = results["segment-sync diff"]["seconds"]
    print(f"the snapshot writer's row hashes: +{hashing:.2f} s; the diff counting them: {ours + hashing:.2f} s")
    summary = {"rows": args.rows, "repeat": args.repeat, "results": results, "writer_hashing_seconds": hashing}
    save_results(f"diff-{args.rows}", summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
    else:
        main()
