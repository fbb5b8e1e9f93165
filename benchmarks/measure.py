"""Measuring helpers shared by the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Read from /proc (VmHWM, which starts afresh at exec) rather than getrusage: Linux carries ru_maxrss
    over from the parent across fork and exec, so a child started by a big parent would report the
    parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_results(name: str, results: Any) -> Path:
    """Write a benchmark's results to benchmarks/results/<name>.json."""
    folder = Path(__file__).with_name("results")
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path
