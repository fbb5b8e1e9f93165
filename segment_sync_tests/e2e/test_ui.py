"""What a new user sees in the UI after `./dev demo`, through the UI's own GraphQL API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segment_sync_tests.support.demo_ui import Query, graphql

JOB_RUNS = """
query JobRuns($job: String!) {
  runsOrError(filter: {
    pipelineName: $job, tags: [{key: ".dagster/repository", value: "__repository__@segment_sync"}]
  }) {
    ... on Runs { results { runId status repositoryOrigin { repositoryLocationName } tags { key value } } }
  }
}
"""
ASSET = """
query Asset($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      groupName description staleStatus
      assetMaterializations(limit: 1) { runId metadataEntries { label ...Values } }
      assetObservations(limit: 5) { runId metadataEntries { label ...Values } }
      assetChecksOrError { ... on AssetChecks { checks { name description
        executionForLatestMaterialization { evaluation { description metadataEntries { label ...Values } } } } } }
    }
  }
}
fragment Values on MetadataEntry {
  ... on MarkdownMetadataEntry { mdStr }
  ... on TextMetadataEntry { text }
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on JsonMetadataEntry { jsonString }
  ... on TableMetadataEntry { table { records } }
}
"""
MANUAL_TAG = "segment_sync/manual"


@pytest.fixture(scope="module")
def query(demo: Path) -> Iterator[Query]:
    with graphql(demo) as q:
        yield q


def _runs(query: Query, job: str) -> list[dict[str, Any]]:
    return query(JOB_RUNS, job=job)["runsOrError"]["results"]


def _asset(query: Query, key: str) -> dict[str, Any]:
    return query(ASSET, path=key.split("/"))["assetNodeOrError"]


def _entries(event: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for entry in event["metadataEntries"]:
        rest = [v for k, v in entry.items() if k != "label"]
        values[entry["label"]] = rest[0] if rest else None
    return values


def test_the_demos_runs_are_listed_under_their_jobs(query: Query) -> None:
    for job in ("sync_users_lifecycle", "sync_account_groups"):
        runs = _runs(query, job)
        assert len(runs) == 2 and {r["status"] for r in runs} == {"SUCCESS"}, runs
        assert {r["repositoryOrigin"]["repositoryLocationName"] for r in runs} == {"segment_sync"}  # the timeline's


def test_manual_runs_are_marked_and_leave_the_latest_delivery_alone(query: Query) -> None:
    [dry_run] = _runs(query, "dry_run_users_lifecycle")
    [test_row] = _runs(query, "test_row_user_traits")
    assert {t["key"]: t["value"] for t in dry_run["tags"]}[MANUAL_TAG] == "dry_run"
    assert {t["key"]: t["value"] for t in test_row["tags"]}[MANUAL_TAG] == "test_row"
    real = {r["runId"] for r in _runs(query, "sync_users_lifecycle") + _runs(query, "sync_user_traits")}
    for key, manual in (("segment/users_lifecycle", dry_run), ("segment/user_traits", test_row)):
        asset = _asset(query, key)
        assert asset["assetMaterializations"][0]["runId"] in real
        [observation] = asset["assetObservations"]
        assert observation["runId"] == manual["runId"]
        assert _entries(observation)["manual_run"] in ("dry run", "test row")
        assert all("intValue" not in e and "floatValue" not in e for e in observation["metadataEntries"])  # no plots
    for key in ("snapshot/users", "diff/users_lifecycle", "diff/user_traits"):
        assert _asset(query, key)["assetMaterializations"][0]["runId"] in real


def test_previews_show_keys_and_changed_columns_not_values(query: Query) -> None:
    for key in ("snapshot/users", "diff/users_lifecycle", "snapshot/active_users"):
        preview = _entries(_asset(query, key)["assetMaterializations"][0])["preview"]
        assert "@" not in preview and "preview_values: true" in preview, (key, preview)
    diff = _entries(_asset(query, "diff/users_lifecycle")["assetMaterializations"][0])["preview"]
    assert "| changed | plan |" in diff
    [observation] = _asset(query, "segment/user_traits")["assetObservations"]
    assert "@" not in _entries(observation)["event"]
    [observation] = _asset(query, "segment/users_lifecycle")["assetObservations"]
    dry_run = _entries(observation)["preview"]
    assert "| track | User Changed Plan |" in dry_run and "@" not in dry_run  # run before the second round
    accounts = _entries(_asset(query, "snapshot/accounts")["assetMaterializations"][0])["preview"]
    assert "Account 1" in accounts  # account_groups opts in with preview_values: true


def test_a_model_shared_by_two_syncs_leaves_both_synced(query: Query) -> None:
    for key in ("diff/users_lifecycle", "diff/user_traits", "segment/users_lifecycle", "segment/user_traits"):
        assert _asset(query, key)["staleStatus"] == "FRESH", key
    assert "also read by `user_traits`" in _asset(query, "diff/users_lifecycle")["description"]


def test_models_read_by_sql_have_their_tables_upstream_and_stages_read_as_bands(query: Query) -> None:
    for key in ("warehouse/users", "warehouse/accounts"):
        assert _asset(query, key)["groupName"] == "segment_sync_warehouse"
    groups = {
        key: _asset(query, key)["groupName"] for key in ("snapshot/users", "diff/user_traits", "segment/user_traits")
    }
    assert groups == {
        "snapshot/users": "segment_sync_snapshot",
        "diff/user_traits": "segment_sync_diff",
        "segment/user_traits": "segment_sync_segment",
    }


def test_each_delivery_reports_its_history_and_counts_by_type_as_tables(query: Query) -> None:
    latest = _entries(_asset(query, "segment/users_lifecycle")["assetMaterializations"][0])
    assert latest["recent_runs"].count("\n") == 3  # header, rule, this run and the one before
    records = latest["events_sent_by_type"]["records"]
    assert records and all('"type"' in r and '"count"' in r for r in records)
    [guard] = _asset(query, "diff/users_lifecycle")["assetChecksOrError"]["checks"]
    assert "at most 50% of the rows last delivered removed" in guard["description"]
    evaluation = guard["executionForLatestMaterialization"]["evaluation"]
    assert evaluation["description"].startswith("Within limits") and _entries(evaluation)["max_removed_percent"]
