"""`segment-sync demo`: run the demo syncs end to end on the embedded DuckDB warehouse."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segment_sync.workspace_runs import CodeLocationRunner

DEMO_SYNCS = ("users_lifecycle", "active_users", "user_traits", "account_groups")
_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `segment-sync` command."""
    parser = argparse.ArgumentParser(prog="segment-sync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo syncs twice, with a warehouse change in between")
    demo.add_argument("--dir", default=".segment_sync/demo", help="where the demo writes (wiped first)")
    log = commands.add_parser("log", help="show a sync's row log (latest run by default) or its API calls")
    log.add_argument("sync", help="the sync's name")
    log.add_argument("--run", help="a run id (default: the latest run)")
    log.add_argument("--key", help="only this primary key, across all kept runs unless --run is given")
    log.add_argument("--status", help="only rows with this status: delivered, rejected, skipped, undelivered")
    log.add_argument("--calls", action="store_true", help="show the run's API calls instead of its rows")
    log.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    log.add_argument(
        "--state-dir",
        default=os.environ.get("SEGMENT_SYNC_STATE_DIR", ".segment_sync"),
        help="the state folder (default: SEGMENT_SYNC_STATE_DIR, else .segment_sync)",
    )
    move = commands.add_parser(
        "move-state", help="move a sync's state to the other engine (local folder <-> warehouse tables), no resend"
    )
    move.add_argument("sync", help="the sync's name")
    move.add_argument("--to", required=True, choices=["warehouse", "polars"], help="the engine the state moves to")
    move.add_argument(
        "--state-dir",
        default=os.environ.get("SEGMENT_SYNC_STATE_DIR", ".segment_sync"),
        help="the local state folder (default: SEGMENT_SYNC_STATE_DIR, else .segment_sync)",
    )
    move.add_argument("--url-env", default="WAREHOUSE_URL", help="environment variable with the warehouse URL")
    move.add_argument("--schema", default="segment_sync", help="the warehouse engine's schema (state_schema)")
    args = parser.parse_args(argv)
    if args.command == "log":
        return show_log(args)
    if args.command == "move-state":
        return move_state(args)
    return run_demo(Path(args.dir))


def show_log(args: argparse.Namespace) -> int:
    """Print a sync's row log or API calls as a table."""
    import polars as pl

    from segment_sync.metadata import markdown_table
    from segment_sync.storage.layout import SyncFolder
    from segment_sync.storage.run_log import latest_run, read_calls, read_row_log

    folder = SyncFolder.of(Path(args.state_dir), args.sync).path
    if not folder.exists():
        print(f"No state for sync {args.sync!r} in {folder.parent}; check the name and --state-dir.", file=sys.stderr)
        return 2
    run = args.run or (None if args.key and not args.calls else latest_run(folder))
    if args.calls:
        frame = read_calls(folder, run) if run else None
        if frame is None:
            print(f"No API calls recorded for sync {args.sync!r} (run {run}).", file=sys.stderr)
            return 1
    else:
        rows = read_row_log(folder, run)
        if args.key:
            rows = rows.filter(pl.col("key") == args.key)
        if args.status:
            rows = rows.filter(pl.col("status") == args.status)
        frame = (
            rows.sort("logged_at")
            .select(
                pl.col("run_id").str.slice(0, 8).alias("run"),
                "key",
                "kind",
                "event",
                "message_id",
                "status",
                "reason",
                pl.col("logged_at").dt.to_string("%Y-%m-%d %H:%M:%S").alias("at"),
            )
            .collect()
        )
    print(f"sync {args.sync}, {'run ' + run if run else 'all kept runs'}: {frame.height} rows")
    print(markdown_table(frame.head(args.limit)))
    return 0


def move_state(args: argparse.Namespace) -> int:
    """Move a sync's state between the local folder and the warehouse's tables."""
    import sqlalchemy as sa

    from segment_sync.error_text import first_line
    from segment_sync.storage.layout import SyncFolder
    from segment_sync.storage.state import StateError, SyncState
    from segment_sync.warehouse.warehouse_error import without_password
    from segment_sync.warehouse_engine.sessions import open_engine
    from segment_sync.warehouse_engine.state_move import move_to_local, move_to_warehouse
    from segment_sync.warehouse_engine.state_tables import StateTables, StateTablesError
    from segment_sync.warehouse_engine.warehouse_state import WarehouseState

    url = os.environ.get(args.url_env)
    if not url:
        print(f"{args.url_env} is not set: set it to the warehouse's SQLAlchemy URL", file=sys.stderr)
        return 2
    folder = SyncFolder.of(Path(args.state_dir), args.sync).path
    if args.to == "warehouse" and not folder.exists():
        print(
            f"No local state for sync {args.sync!r} in {folder.parent}; check the name and --state-dir.",
            file=sys.stderr,
        )
        return 2
    engine = open_engine(url)
    try:
        remote = WarehouseState(engine, StateTables(args.schema), args.sync)
        local = SyncState(folder, args.sync)
        moved = move_to_warehouse(local, remote) if args.to == "warehouse" else move_to_local(remote, local)
    except (StateError, StateTablesError, sa.exc.SQLAlchemyError) as exc:
        print(f"Nothing was moved: {without_password(first_line(exc), url)}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    where = f"{args.schema}.delivered" if args.to == "warehouse" else str(folder)
    print(f"sync {args.sync}: {moved:,} delivered rows moved to {where}. Now set the sync's engine to {args.to}.")
    return 0


def run_demo(folder: Path) -> int:
    """Seed the demo warehouse, run every demo sync, change the warehouse, run them again."""
    folder = folder.resolve()
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "dagster_home").mkdir(parents=True)
    (folder / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update(
        {
            "SEGMENT_SYNC_STATE_DIR": str(folder / "state"),
            "SEGMENT_DESTINATION": "outbox",
            "DAGSTER_HOME": str(folder / "dagster_home"),
        }
    )
    os.environ.pop("WAREHOUSE_URL", None)

    import dagster as dg

    from segment_sync.warehouse.demo_warehouse import change_demo_warehouse
    from segment_sync.workspace_runs import code_location

    failed = False
    with dg.DagsterInstance.get() as instance, code_location(instance) as location:
        for round_name in ("first run (initial load)", "second run (after an insert, updates and a delete)"):
            print(f"\n== {round_name}")
            for sync in DEMO_SYNCS:
                result = location.run(f"sync_{sync}", _QUIET)
                failed |= not result.success
                print(f"  {sync:<16} {_summary(result, sync)}")
            if round_name.startswith("first"):
                change_demo_warehouse(folder / "state" / "demo_warehouse.duckdb")
                failed |= not _manual(location, "dry_run_users_lifecycle", "what users_lifecycle's next run would send")
        failed |= not _manual(location, "test_row_user_traits", "one row sent as user_traits would send it")
    outbox = folder / "state" / "outbox"
    print(f"\nRequest bodies that would have been POSTed to Segment: {outbox}/<sync>.jsonl")
    print("To see these runs, the assets, lineage and metadata in the Dagster UI, run:")
    print(f"  DAGSTER_HOME={folder / 'dagster_home'} SEGMENT_SYNC_STATE_DIR={folder / 'state'} ./dev dg dev")
    return 1 if failed else 0


def _manual(location: CodeLocationRunner, job: str, what: str) -> bool:
    """Run a manual job (it materializes nothing) and say what it did."""
    result = location.run(job, _QUIET)
    print(f"\n== {job}: {what} ({'see its run in the UI' if result.success else 'FAILED: see its run in the UI'})")
    return result.success


def _summary(result: object, sync: str) -> str:
    import dagster as dg

    assert isinstance(result, dg.JobExecutionResult)
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        return "FAILED: " + (failures[0].message if failures else "see the run's logs")
    counts: dict[str, object] = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if event.asset_key == dg.AssetKey(["diff", sync]):
            counts.update({k: metadata[k].value for k in ("added", "changed", "removed")})
        if event.asset_key == dg.AssetKey(["segment", sync]):
            counts["sent"] = {r.data["type"]: r.data["count"] for r in metadata["events_sent_by_type"].value.records}
            counts["rejected"] = metadata["rows_rejected"].value
    return ", ".join(f"{k}={v}" for k, v in counts.items())


if __name__ == "__main__":
    sys.exit(main())
