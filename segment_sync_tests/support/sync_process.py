"""Runs one sync job in its own process, so a test can kill it mid-delivery:
`python -m ... PROJECT_JSON SYNC SEGMENT_JSON [WAREHOUSE_JSON]`."""

import json
import sys

import dagster as dg

from segment_sync_tests.support.sync_runs import make_definitions, run_sync

if __name__ == "__main__":
    project, sync, segment = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    warehouse = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    definitions = make_definitions(project, segment=segment, warehouse=warehouse)
    run = run_sync(definitions, sync, dg.DagsterInstance.ephemeral())
    sys.exit(0 if run.success else 1)
