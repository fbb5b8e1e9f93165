"""Event building benchmark: the columnar builder next to the row-wise reference, on the same diffs.

Run: ./dev python -m benchmarks.build_bench [--rows 200000] [--repeat 3]
A synthetic model (integer key, text, numbers, a decimal, a boolean and a zoned datetime) is diffed against
an empty state, so every row is added; an identify sync and a track sync (with a timestamp column) build
their events chunk by chunk as `sync_run.deliver_diff` does, payloads taken out as bytes. An audience sync
builds `Segment Exited` for every row of a delivered state diffed against an empty snapshot: removed rows,
read back from their delivered content. The row-wise builder
(`events.build_outcomes`) runs on the same rows, and both are checked to give the same outcomes. Reports
events/s of wall time and of process CPU time (Polars may use more than one core), medians of --repeat;
prints a table and writes benchmarks/results/build.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

import polars as pl

from segment_sync.delivery.diff_delivery import CHUNK_ROWS
from segment_sync.diff.keyed_diff import compute_diff, delivered_rows
from segment_sync.events.frame_builder import PAYLOAD, build_event_frame, outcome_columns
from segment_sync.events.row_builder import DiffRow, build_outcomes
from segment_sync.spec import SyncSpec
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, DELIVERED_SCHEMA, HASH, KEY, KIND

SYNC_UUID = "0b9d6c1e-4f3a-4c55-9d0e-3c1f2a4b5c6d"
SYNCS = {
    "identify": SyncSpec(
        name="traits",
        model="users",
        type="identify",
        user_id="user_id",
        fields=["email", "plan", "seats", "score", "balance", "active", "signed_up_at", "note"],
    ),
    "track": SyncSpec(
        name="orders",
        model="users",
        type="track",
        user_id="user_id",
        events={"added": "Order Completed"},
        send_initial=True,
        fields={"Plan": "plan", "Seats": "seats", "Total": "balance", "Region": "region"},
        timestamp="signed_up_at",
    ),
    "exits": SyncSpec(
        name="members",
        model="users",
        type="audience",
        user_id="user_id",
        fields=["plan", "seats", "score", "active", "signed_up_at", "region", "note"],
    ),
}


def model(rows: int) -> pl.DataFrame:
    """The synthetic model's snapshot."""
    i = pl.int_range(rows)
    text = i.cast(pl.String)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pl.select(
        user_id=i,
        email=pl.concat_str([pl.lit("user"), text, pl.lit("@example.com")]),
        plan=pl.lit(pl.Series(["free", "pro", "team"])).gather(i % 3),
        seats=(i % 50).cast(pl.Int32),
        score=i * 0.37,
        balance=((i % 100_000) * 125).cast(pl.Decimal(18, 2)) / 100,
        active=i % 7 != 0,
        signed_up_at=pl.lit(start) + pl.duration(seconds=i),
        region=pl.lit(pl.Series(["eu", "us", "apac"])).gather(i % 3),
        note=pl.when(i % 10 == 0).then(None).otherwise(pl.concat_str([pl.lit("n"), text])),
    )


def diff_of(label: str, sync: SyncSpec, snapshot: pl.DataFrame) -> pl.DataFrame:
    """Every row added (against an empty state), or for "exits" every delivered row removed."""
    if label == "exits":
        state = delivered_rows(snapshot, ["user_id"], sync.sent_columns, 1).lazy()
        return compute_diff(snapshot.clear(), ["user_id"], sync.sent_columns, state).collect()
    empty = pl.LazyFrame(schema=DELIVERED_SCHEMA)
    return compute_diff(snapshot, ["user_id"], sync.sent_columns, empty).collect()


def columnar(sync: SyncSpec, diff: pl.DataFrame) -> pl.DataFrame:
    """Build chunk by chunk as deliver_diff does, taking the payloads out as bytes."""
    frames = []
    for offset in range(0, diff.height, CHUNK_ROWS):
        built = build_event_frame(sync, diff.slice(offset, CHUNK_ROWS), SYNC_UUID, initial=False)
        built[PAYLOAD].to_list()
        frames.append(built)
    return pl.concat(frames)


def row_wise(sync: SyncSpec, diff: pl.DataFrame) -> pl.DataFrame:
    """The reference: one DiffRow and one dict per row, serialized by orjson."""
    rows = [DiffRow(*r) for r in diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]
    outcomes = list(build_outcomes(sync, rows, SYNC_UUID, initial=False))
    return diff.select(KEY, KIND, AFTER, HASH).hstack(outcome_columns(outcomes))


def measure(build: Callable[[], pl.DataFrame], repeat: int) -> tuple[dict[str, float], pl.DataFrame]:
    """Medians of wall and CPU seconds, and the last result."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu, started = time.process_time(), time.perf_counter()
        built = build()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"seconds": wall, "cpu_seconds": cpu, "events_per_second": built.height / wall}, built


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table and write benchmarks/results/build.json."""
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    snapshot = model(args.rows)
    out: dict = {"rows": args.rows, "repeat": args.repeat, "cores": os.cpu_count(), "polars": pl.__version__}
    chunks = f"chunks of {CHUNK_ROWS:,}, median of {args.repeat}"
    print(f"event building, {args.rows:,} rows (added; removed for exits), {chunks}")
    print(f"{'sync':<10}{'builder':<12}{'seconds':>9}{'CPU s':>8}{'events/s':>12}{'per CPU s':>12}{'speed-up':>10}")
    for label, sync in SYNCS.items():
        diff = diff_of(label, sync, snapshot)
        fast, built = measure(lambda sync=sync, diff=diff: columnar(sync, diff), args.repeat)
        slow, reference = measure(lambda sync=sync, diff=diff: row_wise(sync, diff), args.repeat)
        if not built.equals(reference):
            raise AssertionError(f"{label}: the columnar builder's outcomes differ from the row-wise builder's")
        out[label] = {"columnar": fast, "row_wise": slow, "speed_up": slow["seconds"] / fast["seconds"]}
        for name, r in (("columnar", fast), ("row-wise", slow)):
            per_cpu = args.rows / r["cpu_seconds"]
            speed_up = f"{slow['seconds'] / r['seconds']:.1f}x"
            print(
                f"{label:<10}{name:<12}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.2f}"
                f"{r['events_per_second']:>12,.0f}{per_cpu:>12,.0f}{speed_up:>10}"
            )
    save_results("build", out)
    return out


if __name__ == "__main__":
    main()
