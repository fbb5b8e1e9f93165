"""Two machines, one PostgreSQL: `dg launch` of one warehouse-engine sync from two workers with nothing shared on
disk (each its own Dagster home and state folder), at once and in turn, and a dry run from one of them; nothing
is lost or sent twice, and the dry run leaves the next real run its changes."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from segment_sync_tests.support.dg_project import dg_command, worker_environment, write_project
from segment_sync_tests.support.segment_emulator import SegmentEmulator
from segment_sync_tests.support.sync_runs import WRITE_KEY
from segment_sync_tests.support.warehouses import Warehouse

pytestmark = pytest.mark.postgres
ROWS = 3000


def _workers(tmp_path: Path, warehouse: Warehouse, emulator: SegmentEmulator, schema: str) -> list[dict[str, str]]:
    attributes = {
        "engine": "warehouse",
        "executor": "in_process",
        "warehouse": {"kind": "postgres", "state_schema": schema},
        "models": [{"name": "people", "table": "people", "primary_key": "id"}],
        "syncs": [
            {
                "name": "people_traits",
                "model": "people",
                "type": "identify",
                "user_id": "user_id",
                "fields": ["plan"],
            }
        ],
    }
    write_project(tmp_path, attributes)
    variables = {
        "WAREHOUSE_URL": warehouse.url,
        "SEGMENT_ENDPOINT": emulator.url,
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_DESTINATION": "http",
    }
    return [
        worker_environment(tmp_path, tmp_path / name / "home", tmp_path / name / "state", **variables)
        for name in ("worker_a", "worker_b")
    ]


def _launch_together(folder: Path, envs: list[dict[str, str]]) -> list[subprocess.CompletedProcess[str]]:
    command = dg_command("launch", "--job", "sync_people_traits")
    started = [
        subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for env in envs
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), "") for p in started]  # type: ignore[union-attr]


def _launch(folder: Path, env: dict[str, str], job: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dg_command("launch", "--job", job), cwd=folder, env=env, capture_output=True, text=True)


def test_two_workers_at_once_and_in_turn_send_every_row_once(
    postgres_warehouse: Warehouse, emulator: SegmentEmulator, tmp_path: Path
) -> None:
    schema = f"ss_{uuid.uuid4().hex[:10]}"
    postgres_warehouse.execute(
        "create table people (id integer, user_id text, plan text)",
        f"insert into people select i, 'u' || i, 'free' from generate_series(1, {ROWS}) i",
    )
    try:
        envs = _workers(tmp_path, postgres_warehouse, emulator, schema)
        together = _launch_together(tmp_path, envs)
        succeeded = [r for r in together if r.returncode == 0]
        assert succeeded, [r.stdout[-2000:] for r in together]
        # A worker that failed found the other's lease, or found that the other had delivered the diff both had
        # made (their steps interleaved: a diff, the other's diff, a delivery), and refused to send it again; one
        # that succeeded after the other sent nothing
        refusals = ("is already running", "the diff is missing or older than the sync's state")
        for result in together:
            if result.returncode:
                assert any(refusal in result.stdout for refusal in refusals), result.stdout[-3000:]
        assert emulator.counts()["accepted"] == ROWS and emulator.duplicates == 0
        assert {e["userId"] for e in emulator.unique_events().values()} == {f"u{i}" for i in range(1, ROWS + 1)}

        postgres_warehouse.execute("update people set plan = 'pro' where id % 10 = 0")
        for env in (envs[1], envs[0]):  # in turn, each from its own empty-handed machine
            result = subprocess.run(
                dg_command("launch", "--job", "sync_people_traits"),
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        pro = [e for e in emulator.unique_events().values() if e["traits"]["plan"] == "pro"]
        assert len(pro) == ROWS // 10 and emulator.counts()["accepted"] == ROWS + ROWS // 10
        assert emulator.duplicates == 0

        postgres_warehouse.execute("update people set plan = 'team' where id % 100 = 0")
        dry = _launch(tmp_path, envs[1], "dry_run_people_traits")  # from the other machine
        assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
        [bodies] = (tmp_path / "worker_b" / "state").glob("syncs/people_traits/dry_runs/*.jsonl")
        assert bodies.read_text().count('"team"') == ROWS // 100
        assert emulator.counts()["accepted"] == ROWS + ROWS // 10  # nothing sent
        engine = sa.create_engine(postgres_warehouse.url)
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names(schema=schema)
        engine.dispose()
        assert not [t for t in tables if "__dry_" in t]  # its scratch tables are gone
        real = _launch(tmp_path, envs[0], "sync_people_traits")
        assert real.returncode == 0, real.stdout[-2000:] + real.stderr[-2000:]
        team = [e for e in emulator.unique_events().values() if e["traits"]["plan"] == "team"]
        assert len(team) == ROWS // 100 and emulator.duplicates == 0  # the dry run left the diff to the real run
    finally:
        postgres_warehouse.execute(f"drop schema if exists {schema} cascade")
