"""Secrets never reach logs, metadata, state, outbox, Dagster's storage or error messages."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import pytest

from segment_sync_tests.support.segment_emulator import Fault
from segment_sync_tests.support.sync_runs import WRITE_KEY, make_definitions, run_sync

PASSWORD = "pw-Secret-7f3a9"
SLACK_TOKEN = "xoxb-0000-secret-slack-token"
PROJECT = {
    "models": [{"name": "m", "table": "src", "primary_key": "id"}],
    "syncs": [
        {"name": "t", "model": "m", "type": "identify", "user_id": "uid", "fields": ["v"]},
    ],
}


def _secrets() -> list[bytes]:
    basic = base64.b64encode(f"{WRITE_KEY}:".encode())
    return [WRITE_KEY.encode(), basic, PASSWORD.encode(), SLACK_TOKEN.encode()]


def _leaks(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s[:6]!r}..." for s in _secrets() if s in data]
    return found


@pytest.mark.postgres
def test_no_secret_is_written_anywhere(postgres_warehouse, state_dir, emulator, monkeypatch, tmp_path, capfd):
    url = postgres_warehouse.url.replace("postgres@", f"postgres:{PASSWORD}@")  # trust auth accepts any password
    monkeypatch.setenv("WAREHOUSE_URL", url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    postgres_warehouse.execute("create table src as select 1 as id, 'a' as uid, 'x' as v union all select 2, null, 'y'")
    definitions = make_definitions(PROJECT)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        ok = run_sync(definitions, "t", instance)
        assert ok.success and ok.metadata("segment", "t")["rows_rejected"] == 1
        postgres_warehouse.execute("insert into src values (3, 'c', 'z')")
        emulator.inject(Fault(status=401, body=f'{{"code":"unauthorized","message":"bad key {WRITE_KEY}"}}'))
        rejected = run_sync(definitions, "t", instance)  # its only event rejected: the run fails with the answer
        assert not rejected.success and '"message":"bad key <write key>"' in rejected.failure_messages()[0]
        monkeypatch.setenv("WAREHOUSE_URL", url.replace("127.0.0.1:5432", "127.0.0.1:1"))
        down = run_sync(definitions, "t", instance)
        assert not down.success
        texts = [r.error_text() for r in (ok, rejected, down)]
        texts.append(str(ok.metadata("segment", "t")))
    assert emulator.requests, "the sync must really have sent something"
    assert not [s for s in _secrets() for t in texts if s.decode() in t]
    assert _leaks(tmp_path) == []
    captured = capfd.readouterr()
    assert not [s for s in _secrets() if s.decode() in captured.out + captured.err]
