"""Code-location load benchmark: how long Dagster takes to load a project with many syncs.

Run: ./dev python -m benchmarks.load_bench [--syncs 50] [--repeat 3]
Writes a defs.yaml with --syncs syncs (over --syncs / 2 models, all four sync types, schedules, `after:`
chains), then in a fresh process per run: imports Dagster, loads the component from the YAML and resolves
the whole repository (assets, checks, jobs, schedules, sensors) as the webserver does. No warehouse or
Segment is touched: loading does no I/O. Prints a table and writes benchmarks/results/load.json.

The runs load compiled bytecode, as a deployed code server does: they share a private bytecode cache that
one unmeasured run fills first, so a PYTHONDONTWRITEBYTECODE environment does not time Python compiling
Dagster's source (seconds more per run).
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
from pathlib import Path

TYPES = ("track", "audience", "identify", "group")


def project_yaml(syncs: int) -> str:
    """A defs.yaml with `syncs` syncs over half as many models."""
    models = max(1, syncs // 2)
    lines = ["type: segment_sync.SegmentSyncComponent", "attributes:", "  models:"]
    for m in range(models):
        lines += [f"    - name: model_{m}", f"      table: schema_{m % 5}.table_{m}", "      primary_key: id"]
    lines.append("  syncs:")
    for s in range(syncs):
        kind = TYPES[s % 4]
        lines += [
            f"    - name: sync_{s}",
            f"      model: model_{s % models}",
            f"      type: {kind}",
            "      user_id: user_id",
            "      fields: [email, plan, seats]",
        ]
        if kind == "track":
            lines.append("      events: {added: Row Added, changed: Row Changed, removed: Row Removed}")
        if kind == "group":
            lines.append("      group_id: account_id")
        if s % 3 == 0:
            lines.append('      schedule: "*/15 * * * *"')
        elif s % 3 == 1 and s > 0:
            lines.append(f"      after: [sync_{s - 1}]")
    return "\n".join(lines) + "\n"


def _child(yaml_path: str) -> None:
    started = time.perf_counter()
    import dagster as dg  # noqa: F401 - importing Dagster is part of loading a code location

    from segment_sync.component import SegmentSyncComponent

    imported = time.perf_counter()
    import yaml
    from dagster.components.core.component_tree import ComponentTree

    context = ComponentTree.for_test().load_context
    attributes = yaml.safe_load(Path(yaml_path).read_text())["attributes"]
    defs = SegmentSyncComponent.from_attributes_dict(attributes=attributes, context=context).build_defs(context)
    repo = defs.get_repository_def()
    loaded = time.perf_counter()
    counts = {
        "assets": len(repo.assets_defs_by_key),
        "jobs": len(repo.get_all_jobs()),
        "schedules": len(repo.schedule_defs),
        "sensors": len(repo.sensor_defs),
    }
    print(json.dumps({"import": imported - started, "load": loaded - imported, "total": loaded - started, **counts}))


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--syncs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "defs.yaml"
        path.write_text(project_yaml(args.syncs))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
        child = [sys.executable, "-m", "benchmarks.load_bench", "--child", str(path)]
        subprocess.run(child, capture_output=True, check=True, env=env)  # compiles the bytecode; not counted
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run(child, capture_output=True, text=True, check=True, env=env)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {k: statistics.median(r[k] for r in runs) for k in ("import", "load", "total")}
    result.update({k: runs[0][k] for k in ("assets", "jobs", "schedules", "sensors")})
    print(f"code location with {args.syncs} syncs, median of {args.repeat} fresh processes (seconds)")
    print(f"{'import Dagster':<16}{'load + resolve':>16}{'total':>8}   assets jobs schedules sensors")
    print(
        f"{result['import']:<16.2f}{result['load']:>16.2f}{result['total']:>8.2f}   "
        f"{result['assets']:>6} {result['jobs']:>4} {result['schedules']:>9} {result['sensors']:>7}"
    )
    summary = {"syncs": args.syncs, "repeat": args.repeat, "results": result}
    save_results("load", summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        main()
