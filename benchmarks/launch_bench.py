"""Launch benchmark: syncs run the way users run them, through the `dg` CLI, timed from the command to the run's end.

Run: ./dev python -m benchmarks.launch_bench [--rows 1000000] [--big-rows 10000000] [--many-rows 100000]
A fresh Dagster project (pyproject.toml with [tool.dg], a package whose defs/ folder holds a defs.yaml of
`type: segment_sync.SegmentSyncComponent`, as `create-dagster project` makes it) reads a DuckDB warehouse and
sends to the Segment emulator (two processes of its own). Every run is a `dg launch` in a process of its own,
with a Dagster home of its own, exactly as a user types it; the environment is left as it is (on a machine with
PYTHONDONTWRITEBYTECODE=1, as in many container images, only bytecode compiled at install is used; segment_sync's
own is compiled first, as installing its wheel would).
Scenarios:
- dagster: the same kind of project with one asset that does nothing: what Dagster and `dg` cost on their own.
- identify: a 1M-row identify sync (`dg launch --job sync_traits`), initial, with no change and with 1% of
  the rows changed; then the same no-change run through `dg launch --assets`, the UI's Materialize path, with
  the component's `executor: in_process` and with the project's default (multiprocess) executor.
- track: a --big-rows track sync (baseline first), then 1% added, 1% removed and 2% changed.
- many: 20 syncs over 5 models of --many-rows each (`dg launch --assets '*'`), initial and with no change, and
  with no change on the project's default executor.
Beside each run: the time before Dagster started the run, each step's time from Dagster's event log, and the
time after. The read floor is the model read once by the fastest path; the official client
(segment-analytics-python, tuned as in send_bench) sends the identify sync's rows to the same emulator.
Writes benchmarks/results/launch.json.
"""

from __future__ import annotations

import argparse
import compileall
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import read_bench
from benchmarks.e2e_bench import FIELDS, change_users, seed_users
from benchmarks.emulator_process import EmulatorProcesses
from segment_sync_tests.support.dg_project import dg_command, worker_environment, write_project

WRITE_KEY = "bench_write_key_0123456789abcdef"
NO_OP_ASSET = """import dagster as dg


@dg.asset
def no_op() -> dg.MaterializeResult:
    return dg.MaterializeResult()


defs = dg.Definitions(assets=[no_op], executor=dg.in_process_executor)
"""


def _sync(name: str, model: str, kind: str) -> dict[str, Any]:
    sync: dict[str, Any] = {"name": name, "model": model, "type": kind, "user_id": "user_id", "fields": FIELDS}
    if kind == "track":
        sync["events"] = {"added": "User Added", "changed": "User Changed", "removed": "User Removed"}
    if kind == "audience":
        sync["send_initial"] = True
    if kind == "group":
        sync["group_id"] = "region"
    return sync


def _project(folder: Path, models: list[str], syncs: list[dict[str, Any]], executor: str = "in_process") -> None:
    """A project as create-dagster makes it, with one SegmentSyncComponent reading the DuckDB warehouse."""
    attributes = {
        "executor": executor,
        "warehouse": {"kind": "duckdb"},
        "models": [{"name": m, "table": m, "primary_key": "user_id"} for m in models],
        "syncs": syncs,
    }
    write_project(folder, attributes)


def _environment(folder: Path, emulator_url: str) -> dict[str, str]:
    return worker_environment(
        folder,
        folder / "dagster_home",
        folder / "state",
        WAREHOUSE_URL=f"duckdb:///{folder / 'warehouse.duckdb'}",
        SEGMENT_ENDPOINT=emulator_url,
        SEGMENT_WRITE_KEY=WRITE_KEY,
        SEGMENT_DESTINATION="http",
    )


def launch(folder: Path, env: dict[str, str], target: list[str]) -> dict[str, Any]:
    """`dg launch <target>` in the project; its wall time and, from the event log, where that time went."""
    command = dg_command("launch", *target)
    started = time.time()
    out = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    ended = time.time()
    if out.returncode:
        raise RuntimeError(f"{' '.join(target)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    run, stats, steps, sent, state = latest_run(env)
    if not run.is_success:
        raise RuntimeError(f"{' '.join(target)}: run {run.run_id} is {run.status}")
    in_run = stats.end_time - stats.start_time
    return {
        "wall": ended - started,
        "before_run": stats.start_time - started,
        "run": in_run,
        "steps": dict(sorted(steps.items())),
        "steps_total": sum(steps.values()),
        "after_run": ended - stats.end_time,
        "events": sent,
        "state": state,  # of the delivery steps: recording what Segment accepted, and folding it
    }


def latest_run(env: dict[str, str]) -> tuple[Any, Any, dict[str, float], int, float]:
    """The latest run of the Dagster home in `env`: the run, its stats, each step's seconds, events sent and the
    delivery steps' `state_seconds`."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_runs(limit=1)
        stats = instance.get_run_stats(run.run_id)
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run.run_id)}
        sent, state = 0, 0.0
        for key in instance.get_asset_keys():
            if key.path[0] == "segment":
                event = instance.get_latest_materialization_event(key)
                if event is not None and event.run_id == run.run_id:
                    metadata = event.asset_materialization.metadata
                    sent += metadata["events_sent"].value
                    state += metadata["state_seconds"].value
    return run, stats, dict(sorted(steps.items())), sent, state


def official_client(url: str, table: str, emulator: EmulatorProcesses) -> dict[str, Any]:
    """segment-analytics-python, tuned, sending an identify call per row of the table (read as it goes)."""
    import duckdb
    from segment.analytics.client import Client

    from benchmarks.send_bench import OFFICIAL_SETTINGS

    emulator.reset()
    started = time.perf_counter()
    with duckdb.connect(url.removeprefix("duckdb:///"), read_only=True) as conn:
        rows = conn.execute(f"select count(*) from {table}").fetchone()[0]
        client = Client(WRITE_KEY, host=emulator.url, **OFFICIAL_SETTINGS["tuned"], max_queue_size=rows)
        cursor = conn.execute(f"select user_id, {', '.join(FIELDS)} from {table}")
        while batch := cursor.fetchmany(50_000):
            for user_id, *values in batch:
                client.identify(user_id=user_id, traits=dict(zip(FIELDS, values, strict=True)))
    client.flush()
    seconds = time.perf_counter() - started
    client.shutdown()
    counts = emulator.counts()
    if counts["accepted"] != rows or counts["duplicates"]:
        raise AssertionError(f"the official client: {counts} for {rows} rows")
    return {"rows": rows, "seconds": seconds, "events_per_second": rows / seconds}


def read_floor(env: dict[str, str], table: str) -> float:
    """Seconds to read the model once by the fastest path (median of 3, each in a fresh process)."""
    return read_bench.measure(env["WAREHOUSE_URL"], table, "auto", 3)["seconds"]


def _checked(emulator: EmulatorProcesses, runs: dict[str, dict[str, Any]]) -> None:
    counts = emulator.counts()
    sent = sum(r["events"] for r in runs.values())
    if counts["accepted"] != sent or counts["duplicates"] or counts["discarded"]:
        raise AssertionError(f"the emulator counted {counts}; the runs reported {sent} events")
    emulator.reset()


def dagster_scenario(emulator: EmulatorProcesses) -> dict[str, Any]:
    """What Dagster alone costs: the same kind of project with one asset that does nothing, launched twice."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        package = write_project(folder, {"models": [], "syncs": []})
        (package / "defs" / "syncs" / "defs.yaml").unlink()
        (package / "defs" / "syncs" / "definitions.py").write_text(NO_OP_ASSET)
        env = _environment(folder, emulator.url)
        runs = {"first": launch(folder, env, ["--assets", "*"]), "again": launch(folder, env, ["--assets", "*"])}
    return {"runs": runs}


def identify_scenario(emulator: EmulatorProcesses, rows: int, multiprocess: bool = True) -> dict[str, Any]:
    """The 1M-row identify sync: initial, no change, 1% changed; then no change through the Materialize path."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _project(folder, ["users"], [_sync("traits", "users", "identify")])
        env = _environment(folder, emulator.url)
        seed_users(env["WAREHOUSE_URL"], rows)
        emulator.reset()
        runs = {"initial": launch(folder, env, ["--job", "sync_traits"])}
        runs["no change"] = launch(folder, env, ["--job", "sync_traits"])
        change_users(env["WAREHOUSE_URL"], rows)
        runs["1% changed"] = launch(folder, env, ["--job", "sync_traits"])
        runs["no change, --assets"] = launch(folder, env, ["--assets", "*"])
        if multiprocess:
            _project(folder, ["users"], [_sync("traits", "users", "identify")], executor="project_default")
            runs["same, multiprocess"] = launch(folder, env, ["--assets", "*"])
        _checked(emulator, runs)
        floor = read_floor(env, "users")
        official = official_client(env["WAREHOUSE_URL"], "users", emulator)
    return {"rows": rows, "read_floor": floor, "runs": runs, "official": official}


def track_scenario(emulator: EmulatorProcesses, rows: int) -> dict[str, Any]:
    """A big track sync: its baseline, then 1% added, 1% removed and 2% changed."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _project(folder, ["users"], [_sync("lifecycle", "users", "track")])
        env = _environment(folder, emulator.url)
        seed_users(env["WAREHOUSE_URL"], rows)
        emulator.reset()
        runs = {"initial (baseline)": launch(folder, env, ["--job", "sync_lifecycle"])}
        change_users(env["WAREHOUSE_URL"], rows)
        runs["4% changed"] = launch(folder, env, ["--job", "sync_lifecycle"])
        _checked(emulator, runs)
        floor = read_floor(env, "users")
    return {"rows": rows, "read_floor": floor, "runs": runs}


def many_scenario(emulator: EmulatorProcesses, rows: int, multiprocess: bool = True) -> dict[str, Any]:
    """20 syncs over 5 models, all launched at once: initial and with no change."""
    models = [f"model_{i}" for i in range(5)]
    kinds = ("identify", "track", "audience", "group")
    syncs = [_sync(f"{kind}_{i}", model, kind) for i, model in enumerate(models) for kind in kinds]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _project(folder, models, syncs)
        env = _environment(folder, emulator.url)
        for model in models:
            seed_users(env["WAREHOUSE_URL"], rows, model)
        emulator.reset()
        runs = {"initial": launch(folder, env, ["--assets", "*"])}
        runs["no change"] = launch(folder, env, ["--assets", "*"])
        if multiprocess:
            _project(folder, models, syncs, executor="project_default")
            runs["same, multiprocess"] = launch(folder, env, ["--assets", "*"])
        _checked(emulator, runs)
    return {"models": len(models), "syncs": len(syncs), "rows_per_model": rows, "runs": runs}


def _print(name: str, result: dict[str, Any]) -> None:
    if name == "dagster":
        print("dagster alone: a project with one asset that does nothing")
    elif "syncs" in result:
        print(f"{name}: {result['syncs']} syncs over {result['models']} models of {result['rows_per_model']:,} rows")
    else:
        print(f"{name}: {result['rows']:,} rows; the read floor {result['read_floor']:.2f} s")
    print(f"{'run':<22}{'wall':>7}{'before':>8}{'steps':>7}{'after':>7}{'events':>11}{'state':>7}  steps (s)")
    for run, r in result["runs"].items():
        steps = ", ".join(f"{k.split('__')[0]} {v:.2f}" for k, v in r["steps"].items())
        if len(r["steps"]) > 4:
            steps = f"{len(r['steps'])} steps"
        print(
            f"{run:<22}{r['wall']:>7.2f}{r['before_run']:>8.2f}{r['steps_total']:>7.2f}{r['after_run']:>7.2f}"
            f"{r['events']:>11,}{r['state']:>7.2f}  {steps}"
        )
    if "official" in result:
        official, initial = result["official"], result["runs"]["initial"]
        print(
            f"official client, tuned: {official['seconds']:.2f} s ({official['events_per_second']:,.0f} events/s); "
            f"the initial run is {official['seconds'] / initial['wall']:.1f}x faster "
            f"(its steps alone, without Dagster's part: {official['seconds'] / initial['steps_total']:.1f}x)"
        )


def compile_as_installed() -> None:
    """Compile segment_sync's bytecode as pip does installing its wheel; this checkout's editable install is not."""
    import segment_sync

    compileall.compile_dir(Path(segment_sync.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the identify sync's model")
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the track sync's model")
    parser.add_argument("--many-rows", type=int, default=100_000, help="rows of each of the 5 models")
    parser.add_argument("--scenarios", default="dagster,identify,track,many", help="which to run, comma-separated")
    parser.add_argument("--no-multiprocess", action="store_true", help="skip the runs on the project's executor")
    args = parser.parse_args(argv)
    scenarios = {
        "dagster": dagster_scenario,
        "identify": lambda emulator: identify_scenario(emulator, args.rows, not args.no_multiprocess),
        "track": lambda emulator: track_scenario(emulator, args.big_rows),
        "many": lambda emulator: many_scenario(emulator, args.many_rows, not args.no_multiprocess),
    }
    compile_as_installed()
    out: dict[str, Any] = {}
    with EmulatorProcesses(WRITE_KEY, processes=2) as emulator:
        for name in args.scenarios.split(","):
            out[name] = scenarios[name](emulator)
            _print(name, out[name])
    save_results("launch" if len(out) == len(scenarios) else f"launch-{'-'.join(out)}", out)
    return out


if __name__ == "__main__":
    main()
