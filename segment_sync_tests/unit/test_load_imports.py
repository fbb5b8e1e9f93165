"""What a fresh process imports: no run-time dependency to load the code location, no PostgreSQL driver for DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Heavy packages only asset bodies and sensor evaluations need; importing any of them slows every code-location load.
RUN_TIME_ONLY = ("polars", "polars_hash", "pyarrow", "duckdb", "sqlalchemy", "psycopg", "slack_sdk", "isal")
RUN_TIME_ONLY += ("requests", "urllib3", "http")  # the delivery's HTTP code: requests, urllib3, http.client

ATTRIBUTES = {
    "models": [
        {"name": "users", "table": "analytics.users", "primary_key": "user_id"},
        {"name": "accounts", "sql": "select * from accounts", "primary_key": ["region", "account_id"]},
    ],
    "syncs": [
        {"name": "signups", "model": "users", "type": "track", "user_id": "user_id", "events": {"added": "Signed Up"}},
        {"name": "active", "model": "users", "type": "audience", "user_id": "user_id", "after": ["dbt/users"]},
        {"name": "traits", "model": "users", "type": "identify", "user_id": "user_id", "schedule": "0 * * * *"},
        {"name": "groups", "model": "accounts", "type": "group", "user_id": "owner", "group_id": "account_id"},
    ],
    "alerts": {"rejected_rows_threshold": {"signups": "5%"}},
}

# Loads the component from defs.yaml and resolves the whole repository, as a code server does, in a fresh process.
LOAD = textwrap.dedent(
    """
    import json, sys
    from dagster.components.testing import create_defs_folder_sandbox
    from segment_sync import SegmentSyncComponent

    attributes, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            repo = defs.get_repository_def()
            assert len(repo.assets_defs_by_key) == 12 and len(repo.sensor_defs) == 4, repo  # 12: warehouse/accounts
    print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules} & set(watched))))
    """
)


def test_loading_the_definitions_imports_no_run_time_dependency():
    args = [sys.executable, "-c", LOAD, json.dumps(ATTRIBUTES), json.dumps(RUN_TIME_ONLY)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# Reads a DuckDB model by its fast path in a fresh process, with the snapshot step's module, as a DuckDB project's
# snapshot step does.
READ_DUCKDB = textwrap.dedent(
    """
    import json, sys
    import duckdb
    import segment_sync.assets.snapshot_step
    from segment_sync.spec import ModelSpec
    from segment_sync.warehouse.model_reader import read_model_batches

    database = sys.argv[1]
    with duckdb.connect(database) as conn:
        conn.execute("create table users as select 'u' || i as user_id, i as n from range(10) t(i)")
    model = ModelSpec(name="users", table="users", primary_key="user_id")
    with read_model_batches(f"duckdb:///{database}", model) as batches:
        assert batches.path == "duckdb_arrow", batches.path
        assert sum(len(frame) for frame in batches.frames) == 10
    print(json.dumps(sorted(m.partition(".")[0] for m in sys.modules)))
    """
)


def test_reading_a_duckdb_model_imports_no_postgresql_driver(tmp_path):
    args = [sys.executable, "-c", READ_DUCKDB, str(tmp_path / "warehouse.duckdb")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "psycopg" not in json.loads(result.stdout.strip().splitlines()[-1])
