"""Chaos tests: faults, killed processes and concurrent runs, with nothing lost or duplicated."""
