"""The benchmark suite still runs: every benchmark at tiny sizes, one repeat (numbers are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segment_sync_tests.support.warehouses import postgres_or_skip

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_the_benchmark_suite_runs_at_smoke_scale() -> None:
    postgres_or_skip()  # the read benchmark reads PostgreSQL too
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((ROOT / "benchmarks" / "results" / "summary.json").read_text())
    assert summary["scale"] == "smoke"
    assert {"read", "diff", "send", "build", "e2e", "load", "launch", "targets"} <= summary.keys()
    # Each benchmark checks its own results as it goes (e.g. every event accepted once by the emulator).
    assert len(summary["targets"]) >= 10 and "targets (smoke scale)" in out.stdout
