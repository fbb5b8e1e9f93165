"""Read benchmark: a model read into Polars through SQLAlchemy and through each dialect's fast path.

Run: ./dev python -m benchmarks.read_bench [--rows 1000000] [--repeat 3] [--databases duckdb,sqlite,postgres]
A synthetic model (string key + 10 columns: ints, floats, strings, a nullable string, a boolean, a timestamp)
is written to a DuckDB file, a SQLite file and a PostgreSQL table (dropped afterwards). Each read streams the
model's batches as the snapshot asset does, in its own process, so peak RSS is the reader's own. Prints a table
and writes benchmarks/results/read.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POSTGRES_URL = os.environ.get("SEGMENT_SYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODEL = """select 'user-' || i as user_id, ['free','pro','team'][1 + i % 3] as plan, (i % 50)::integer as seats,
    (i * 0.37)::double as score, i % 7 <> 0 as active, timestamp '2026-01-01' + to_seconds(i) as signed_up_at,
    ['eu','us','apac'][1 + i % 3] as region, case when i % 10 = 0 then null else 'n' || i end as note,
    'city-' || (i % 1000) as city, (18 + i % 60)::integer as age, ((i % 100000) * 1.25)::double as balance
    from range({rows}) t(i)"""
COLUMNS = """user_id text, plan text, seats integer, score double precision, active boolean,
    signed_up_at timestamp, region text, note text, city text, age integer, balance double precision"""
FAST_PATH = {"duckdb": "duckdb_arrow", "postgres": "postgres_copy"}


def make_duckdb(folder: Path, rows: int) -> str:
    """The model as a DuckDB table; returns its URL."""
    import duckdb

    path = folder / "bench.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(f"create table model as {MODEL.format(rows=rows)}")
    return f"duckdb:///{path}"


def make_sqlite(folder: Path, rows: int) -> str:
    """The model as a SQLite table (timestamps as ISO text, as SQLite keeps them); returns its URL."""
    import duckdb

    path = folder / "bench.sqlite"
    with duckdb.connect() as source, sqlite3.connect(path) as target:
        target.execute(f"create table model ({COLUMNS})")
        result = source.execute(
            f"select * replace (strftime(signed_up_at, '%Y-%m-%d %H:%M:%S') as signed_up_at) "
            f"from ({MODEL.format(rows=rows)})"
        )
        while chunk := result.fetchmany(100_000):
            target.executemany(f"insert into model values ({', '.join('?' * 11)})", chunk)
    return f"sqlite:///{path}"


def make_postgres(folder: Path, rows: int, table: str) -> str:
    """The model as a PostgreSQL table in the test database, loaded with COPY; returns its URL."""
    import duckdb
    import psycopg
    import sqlalchemy as sa

    csv = folder / "bench.csv"
    with duckdb.connect() as conn:
        conn.execute(f"copy ({MODEL.format(rows=rows)}) to '{csv}' (format csv, header false)")
    url = sa.make_url(POSTGRES_URL)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    ) as conn:
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} ({COLUMNS})")
        with conn.cursor().copy(f"copy {table} from stdin (format csv)") as copy, open(csv, "rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
    csv.unlink()
    return POSTGRES_URL


def drop_postgres(table: str) -> None:
    import psycopg
    import sqlalchemy as sa

    url = sa.make_url(POSTGRES_URL)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    ) as conn:
        conn.execute(f"drop table if exists {table}")


def _child(url: str, table: str, read_path: str) -> None:
    import duckdb_engine  # noqa: F401 - imports are not what is measured
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    import segment_sync.warehouse.duckdb_reader  # noqa: F401 - model_reader imports a fast path when it takes it
    import segment_sync.warehouse.postgres_reader  # noqa: F401
    from benchmarks.measure import peak_rss_mb
    from segment_sync.spec import ModelSpec
    from segment_sync.warehouse.model_reader import read_model_batches

    model = ModelSpec(name="bench", table=table, primary_key="user_id")
    started = time.perf_counter()
    rows = 0
    with read_model_batches(url, model, read_path=read_path) as batches:  # type: ignore[arg-type]
        for frame in batches:
            rows += frame.height
        path = batches.path
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_mb": peak_rss_mb(), "rows": rows, "path": path}))


def measure(url: str, table: str, read_path: str, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.read_bench", "--child", url, table, read_path],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    return {
        "path": runs[0]["path"],
        "rows": runs[0]["rows"],
        **{k: statistics.median(r[k] for r in runs) for k in ("seconds", "rss_mb")},
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, write results/read.json and return the results."""
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="duckdb,sqlite,postgres")
    args = parser.parse_args(argv)
    databases = args.databases.split(",")
    pg_table = f"read_bench_{os.getpid()}"
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            for database in databases:
                if database == "duckdb":
                    url, table = make_duckdb(folder, args.rows), "model"
                elif database == "sqlite":
                    url, table = make_sqlite(folder, args.rows), "model"
                else:
                    url, table = make_postgres(folder, args.rows, pg_table), pg_table
                baseline = measure(url, table, "sqlalchemy", args.repeat)
                results.append({"database": database, **baseline, "x_sqlalchemy": 1.0})
                if database in FAST_PATH:
                    fast = measure(url, table, "auto", args.repeat)
                    assert fast["path"] == FAST_PATH[database] and fast["rows"] == args.rows, fast
                    results.append(
                        {"database": database, **fast, "x_sqlalchemy": baseline["seconds"] / fast["seconds"]}
                    )
        finally:
            if "postgres" in databases:
                drop_postgres(pg_table)
    print(f"model read into Polars, {args.rows:,} rows x 11 columns, median of {args.repeat}")
    print(f"{'database':<10}{'path':<15}{'seconds':>9}{'rows/s':>12}{'x SQLAlchemy':>14}{'peak RSS MB':>13}")
    for r in results:
        print(
            f"{r['database']:<10}{r['path']:<15}{r['seconds']:>9.2f}{r['rows'] / r['seconds']:>12,.0f}"
            f"{r['x_sqlalchemy']:>14.1f}{r['rss_mb']:>13,.0f}"
        )
    report = {"rows": args.rows, "repeat": args.repeat, "results": results}
    save_results("read", report)
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
    else:
        main()
