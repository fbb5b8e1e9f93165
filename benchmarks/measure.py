"""Measuring helpers shared by the benchmarks."""

from __future__ import annotations

from pathlib import Path


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
