"""The demo run once through the CLI, and the UI's GraphQL API over its Dagster home, as `dg dev` would serve it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

REPO = Path(__file__).resolve().parents[2]
Query = Callable[..., dict[str, Any]]


def run_demo(folder: Path) -> subprocess.CompletedProcess[str]:
    """`segment-sync demo --dir <folder>`, as a new user runs it (through `./dev demo`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WAREHOUSE_URL", "SEGMENT_SYNC_STATE_DIR", "DAGSTER_HOME")}
    command = [str(Path(sys.executable).with_name("segment-sync")), "demo", "--dir", str(folder)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def demo_environment(folder: Path) -> dict[str, str]:
    """The variables the demo tells the user to set for `dg dev`."""
    return {
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "SEGMENT_SYNC_STATE_DIR": str(folder / "state"),
        "SEGMENT_DESTINATION": "outbox",
    }


@contextmanager
def graphql(folder: Path) -> Iterator[Query]:
    """Queries of the UI's GraphQL API, answered in this process over the demo's instance and code location."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    from segment_sync.workspace_runs import loaded_workspace

    saved = {k: os.environ.get(k) for k in demo_environment(folder)}
    os.environ.update(demo_environment(folder))
    try:
        with dg.DagsterInstance.get() as instance, loaded_workspace(instance) as process:

            def query(text: str, **variables: Any) -> dict[str, Any]:
                result = execute_dagster_graphql(process.create_request_context(), text, variables)
                assert not result.errors, result.errors
                return result.data

            yield query
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
