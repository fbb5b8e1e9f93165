"""Alerts (Slack here; other channels in test_alert_channels.py): real sync runs, the sensors called as the daemon
would, and a local stub of Slack's Web API."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from segment_sync.alerts.thresholds import RejectedThreshold, parse_thresholds
from segment_sync_tests.support.alert_runs import MISSING_COLUMN, Alerts, alert_file, one_sync_project
from segment_sync_tests.support.segment_emulator import Fault
from segment_sync_tests.support.slack_stub import Reply, SlackStub
from segment_sync_tests.support.sync_runs import TRACK, SyncRun, make_definitions, run_manual

TOKEN = "xoxb-1111-2222-SECRETtokenVALUE"
WRONG_TOKEN = "xoxb-9999-OTHERsecretVALUE"
CHANNEL = "#sync-alerts"
UI = "http://dagster.test:3000"
PROJECT_ENV = "SEGMENT_SYNC_TEST_PROJECT"  # the project that `project_definitions` loads in the step processes


_project = one_sync_project


@dg.definitions
def project_definitions() -> dg.Definitions:
    """The definitions of the project in SEGMENT_SYNC_TEST_PROJECT, as a code location holds them."""
    return make_definitions(json.loads(os.environ[PROJECT_ENV]))


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    with SlackStub(token=TOKEN, channels=(CHANNEL,)) as stub:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("SLACK_API_URL", stub.url.rstrip("/"))  # a missing trailing / is added
        monkeypatch.setenv("DAGSTER_UI_URL", UI + "/")
        yield stub


@pytest.fixture
def duck(duckdb_warehouse, state_dir, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    return duckdb_warehouse


@pytest.fixture
def launch(monkeypatch: pytest.MonkeyPatch) -> Callable[[Alerts, list[str]], dg.DagsterRun]:
    """Materialize assets as `dg launch --assets` does: the implicit asset job, each step in a process of its own."""

    def launch(alerts: Alerts, assets: list[str]) -> dg.DagsterRun:
        monkeypatch.setenv(PROJECT_ENV, json.dumps(alerts.project))
        repository = ReconstructableRepository.for_module(__name__, "project_definitions")
        keys = [dg.AssetKey.from_user_string(a) for a in assets]
        job = repository.get_reconstructable_job("__ASSET_JOB")
        with dg.execute_job(job, alerts.instance, asset_selection=keys, raise_on_error=False) as result:
            return result.dagster_run

    return launch


def _alert_file(state_dir: Path, sync: str = "t") -> dict:
    """Slack's part of a sync's alert status."""
    return alert_file(state_dir, sync)["channels"]["slack"]


def _said(slack: SlackStub) -> list[str]:
    """Each posted message as its first words: the kind of message and the sync."""
    return [t.split(" (model")[0] for t in slack.texts()]


def test_failure_alert_names_the_sync_model_error_counts_and_run(duck, emulator, instance, slack, state_dir):
    duck.execute(
        "create table src as select i as id, case when i = 2 then null else 'u' || i end as uid, 'x' as v "
        "from range(1, 6) t(i)"
    )
    emulator.inject(*[Fault(status=500)] * 3)  # outlasts the 3 attempts: the delivery fails with its metadata
    alerts = Alerts(_project(TRACK), instance, threshold={"t": "50%"})  # 1 of 5 rejected stays under 50%
    run, logs = alerts.run_and_evaluate()
    assert not run.success
    [text] = slack.texts()
    assert text.startswith(":red_circle: Segment sync *t* (model `m`) failed.")
    assert "> segment__t: sync 't': 4 rows were not delivered (gave up after 3 attempts: HTTP 500)" in text
    assert "So far: 5 added, 0 changed, 0 removed; 0 events sent, 1 row rejected, 4 rows undelivered." in text
    assert f"Run: <{UI}/runs/{run.result.run_id}|{run.result.run_id[:8]}>" in text
    [post] = slack.requests
    assert post.authorization == f"Bearer {TOKEN}" and post.body["channel"] == CHANNEL
    assert _alert_file(state_dir)["told"] == {"failing": True, "rejecting": False}
    assert logs.text(logging.WARNING) == ""


def test_a_failing_sync_posts_once_and_once_more_when_it_recovers(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    run, _ = alerts.run_and_evaluate()
    [text] = slack.texts()
    assert "> diff__t: sync 't': model 'm' has no column 'plan'" in text
    assert "So far: no diff; nothing delivered." in text

    with dg.instance_for_test() as wiped:  # the alert status lives in the state folder, not in Dagster
        assert not alerts.run_and_evaluate(wiped)[0].success
    assert not alerts.run_and_evaluate()[0].success
    assert len(slack.texts()) == 1

    duck.execute("alter table src add column plan varchar")
    run, _ = alerts.run_and_evaluate()
    assert run.success
    recovered = slack.texts()[1]
    assert recovered.startswith(":large_green_circle: Segment sync *t* (model `m`) has recovered.")
    assert "This run: 1 added, 0 changed, 0 removed; 1 event sent, 0 rows rejected, 0 rows undelivered." in recovered
    assert f"{UI}/runs/{run.result.run_id}" in recovered

    assert alerts.run_and_evaluate()[0].success
    assert len(slack.texts()) == 2


def test_a_run_that_fails_before_any_step_reports_the_root_cause(duck, emulator, instance, slack, monkeypatch):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    Alerts(_project(TRACK), instance).run_and_evaluate()
    [text] = slack.texts()
    assert "> SEGMENT_WRITE_KEY is not set, so nothing can be sent to Segment." in text


def test_rejected_rows_warn_once_above_a_count_and_once_when_back_within(duck, emulator, instance, slack):
    duck.execute(
        "create table src as select i as id, case when i in (2, 3) then null else 'u' || i end as uid, "
        "'x' as v from range(1, 6) t(i)"
    )
    alerts = Alerts(_project(TRACK), instance, threshold={"t": "1"})
    run, _ = alerts.run_and_evaluate()
    assert run.success
    [warning] = slack.texts()
    assert warning.startswith(":warning: Segment sync *t* (model `m`) rejected 2 of the 5 rows it tried to send (40%)")
    assert "above its threshold of 1 row." in warning
    assert "Reasons, in a sample of 2 rows: 2 × no user id: 'uid' is null or empty" in warning
    assert "Sample keys: `2`, `3`" in warning
    path = run.metadata("segment", "t")["rejected_rows_file"]
    assert f"All rejected rows: `{path}`" in warning and Path(path).exists()

    run, _ = alerts.run_and_evaluate()  # the same two rows are tried again, and rejected again
    assert run.metadata("segment", "t")["rows_rejected"] == 2
    assert len(slack.texts()) == 1

    duck.execute("update src set uid = 'fixed' || id where uid is null")
    assert alerts.run_and_evaluate()[0].success
    assert len(slack.texts()) == 2
    assert slack.texts()[1].startswith(":white_check_mark: Segment sync *t* (model `m`) is back within its")
    assert "threshold of 1 row: 0 of 2 rows rejected" in slack.texts()[1]


def test_rejected_rows_percentage_threshold_and_no_row_content(duck, emulator, instance, slack):
    duck.execute(
        "create table src as select i as id, case when i = 2 then null else 'u' || i end as uid, 'x' as v "
        "from range(1, 6) t(i)"
    )
    duck.execute("insert into src values (null, 'private@example.com', 'x')")  # its reason carries the row
    run = Alerts(_project(TRACK), instance).run()
    assert run.metadata("segment", "t")["rows_rejected"] == 2  # of 6 rows: 33%

    Alerts(_project(TRACK), instance, threshold={"t": "40%"}).evaluate(run)
    assert slack.texts() == []
    Alerts(_project(TRACK), instance, threshold={"t": "10%"}).evaluate(run)
    [warning] = slack.texts()
    assert "rejected 2 of the 6 rows it tried to send (33%), above its threshold of 10%" in warning
    assert "1 × the primary key of model 'm' is null, so the row cannot be tracked;" in warning
    assert "private@example.com" not in warning and "Sample keys: null, `2`" in warning


@pytest.mark.parametrize(
    ("text", "rejected", "attempted", "over"),
    [
        ("0", 1, 100, True),
        ("0", 0, 100, False),
        ("25", 25, 100, False),
        ("25", 26, 100, True),
        ("5%", 5, 100, False),
        ("5%", 6, 100, True),
        ("2.5%", 3, 100, True),
        ("0%", 1, 1000, True),
    ],
)
def test_threshold_counts_and_percentages(text, rejected, attempted, over):
    assert RejectedThreshold.parse(text).exceeded(rejected, attempted) is over


@pytest.mark.parametrize("text", ["-1", "five", "5%%", "150%", ""])
def test_threshold_typos_are_reported_with_the_sync(text):
    with pytest.raises(ValueError, match=r"rejected_rows_threshold\.t: .* a row count like '25'"):
        parse_thresholds(["t"], {"t": text})


def test_threshold_for_an_unknown_sync_is_reported():
    with pytest.raises(ValueError, match=r"no sync is named 'tt' \(syncs: t\)"):
        parse_thresholds(["t"], {"tt": "5"})


def test_sensors_run_by_default_and_load(duck, instance):
    alerts = Alerts(_project(TRACK), instance)
    assert [s.name for s in alerts.sensors] == [
        "segment_sync_alerts_on_failure",
        "segment_sync_alerts_on_success",
        "segment_sync_alerts_retry",
    ]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in alerts.sensors)
    dg.Definitions.validate_loadable(alerts.definitions)


def test_a_daemon_tick_of_the_failure_sensor_finds_the_failed_run(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    run = alerts.run()
    alerts.tick()
    [text] = slack.texts()
    assert run.result.run_id in text


def test_without_a_token_alerts_are_off_and_nothing_breaks(duck, emulator, instance, slack, monkeypatch, state_dir):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    _, logs = alerts.run_and_evaluate()
    [record] = logs.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "Slack alerts are off: set SLACK_BOT_TOKEN to have sync failures posted to Slack"
    assert alerts.retry()[0].skip_message == "No alert is waiting"
    assert slack.requests == [] and not (state_dir / "syncs" / "t" / "alerts.json").exists()


@pytest.mark.parametrize(
    ("mode", "requests", "logged"),
    [
        ("invalid_auth", 1, "(invalid_auth): SLACK_BOT_TOKEN is not a valid token"),
        ("channel_not_found", 1, "(channel_not_found): SLACK_CHANNEL names no channel the bot can see"),
        ("long_rate_limit", 1, "(HTTP 429, ratelimited): Slack is rate-limiting this app"),
        ("server_error", 2, "(HTTP 500, Received a response in a non-JSON format"),
        ("connection_refused", 0, "Could not reach Slack to post the alert for sync 't' (URLError"),
    ],
)
def test_slack_failures_are_logged_and_the_alert_is_posted_later(
    mode, requests, logged, duck, emulator, instance, slack, monkeypatch, caplog, state_dir, refused_url
):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    if mode == "invalid_auth":
        monkeypatch.setenv("SLACK_BOT_TOKEN", WRONG_TOKEN)
    elif mode == "channel_not_found":
        monkeypatch.setenv("SLACK_CHANNEL", "#no-such-channel")
    elif mode == "long_rate_limit":
        slack.script(Reply(429, "ratelimited", retry_after="30"))  # too long to wait in a sensor: not retried now
    elif mode == "server_error":
        slack.script(*[Reply(500, body="<html>Internal Server Error</html>")] * 2)  # outlasts the one retry
    else:
        monkeypatch.setenv("SLACK_API_URL", f"{refused_url}/api/")
    with caplog.at_level(logging.DEBUG):
        run, logs = alerts.run_and_evaluate()
    assert not run.success
    assert len(slack.requests) == requests and slack.texts() == []
    assert logged in logs.text(logging.WARNING)
    assert _alert_file(state_dir)["told"]["failing"] is False  # not recorded as alerted
    for text in (logs.text(), caplog.text):
        assert TOKEN not in text and WRONG_TOKEN not in text

    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    reason, _ = alerts.retry()
    assert reason.skip_message == "Tried again the alerts of t"
    [text] = slack.texts()
    assert "Segment sync *t* (model `m`) failed." in text and TOKEN not in text
    assert _alert_file(state_dir)["told"]["failing"] is True and _alert_file(state_dir)["pending"] == {}
    assert alerts.retry()[0].skip_message == "No alert is waiting"
    assert len(slack.texts()) == 1


@pytest.mark.parametrize(
    "replies", [[Reply(429, "ratelimited", retry_after="1")], [Reply(500, body="oops")], [Reply(503, body="oops")]]
)
def test_short_rate_limits_and_server_errors_are_retried_at_once(replies, duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    slack.script(*replies)
    _, logs = Alerts(_project(MISSING_COLUMN), instance).run_and_evaluate()
    first, second = slack.requests
    assert (first.status, second.status) == (replies[0].status, 200)
    assert len(slack.texts()) == 1 and logs.text(logging.WARNING) == ""
    if replies[0].retry_after:
        assert second.at - first.at >= 1  # Retry-After honoured


def test_an_alert_slack_refused_is_posted_by_the_next_failed_run(duck, emulator, instance, slack, monkeypatch):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    monkeypatch.setenv("SLACK_CHANNEL", "#no-such-channel")
    alerts.run_and_evaluate()
    monkeypatch.setenv("SLACK_CHANNEL", CHANNEL)
    run, _ = alerts.run_and_evaluate()
    [text] = slack.texts()
    assert run.result.run_id in text  # the newer run's message replaced the one that was not posted


def test_a_refused_alert_does_not_hold_up_another_syncs(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    project = _project(MISSING_COLUMN)
    project["syncs"].append({**MISSING_COLUMN, "name": "u"})
    alerts = Alerts(project, instance)
    slack.script(Reply(error="channel_not_found"))
    alerts.run_and_evaluate(sync="t")
    alerts.run_and_evaluate(sync="u")
    assert _said(slack) == [":red_circle: Segment sync *u*"]
    assert alerts.retry()[0].skip_message == "Tried again the alerts of t"
    assert _said(slack) == [":red_circle: Segment sync *u*", ":red_circle: Segment sync *t*"]


def test_a_run_reported_after_a_newer_one_is_ignored(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    failed = alerts.run()
    duck.execute("alter table src add column plan varchar")
    succeeded = alerts.run()
    alerts.evaluate(succeeded)
    logs = alerts.evaluate(failed)  # the failure sensor is late: the sync has already recovered
    assert slack.texts() == []
    assert "is older than one already seen" in logs.text()


@pytest.mark.parametrize(("job", "config"), [("dry_run_t", None), ("test_row_t", {"key": "1"})])
def test_dry_runs_and_test_rows_say_nothing_about_the_sync(job, config, duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    alerts.run_and_evaluate()
    duck.execute("alter table src add column plan varchar")
    manual = run_manual(alerts.definitions, job, instance, config)  # (the test row fails: its snapshot lacks plan)
    alerts.evaluate(SyncRun(manual.result))
    assert len(slack.texts()) == 1  # still failing, as far as Slack knows
    alerts.run_and_evaluate()
    assert "has recovered" in slack.texts()[1]


def test_assets_materialized_outside_the_syncs_job_alert_and_recover_through_another_job(
    duck, emulator, instance, slack, launch
):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    run = launch(alerts, ["snapshot/m", "diff/t", "segment/t"])
    assert (run.job_name, run.status) == ("__ASSET_JOB", dg.DagsterRunStatus.FAILURE)
    alerts.tick()
    [text] = slack.texts()
    assert text.startswith(":red_circle: Segment sync *t* (model `m`) failed.")
    assert "> diff__t: sync 't': model 'm' has no column 'plan'" in text and run.run_id in text

    duck.execute("alter table src add column plan varchar")
    recovered = alerts.run_users_job()
    assert recovered.success
    alerts.tick()
    assert slack.texts()[1].startswith(":large_green_circle: Segment sync *t* (model `m`) has recovered.")
    assert recovered.run_id in slack.texts()[1] and len(slack.texts()) == 2


def test_a_run_over_two_syncs_judges_each_by_its_own_steps(duck, emulator, instance, slack, state_dir):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    project = _project({**TRACK, "name": "a"})
    project["syncs"].append({**MISSING_COLUMN, "name": "b"})
    alerts = Alerts(project, instance)
    both = ["snapshot/m", "diff/a", "segment/a", "diff/b", "segment/b"]
    run = alerts.materialize(*both)
    assert not run.success and run.materialized() == {"snapshot/m", "diff/a", "segment/a"}  # b has no column plan
    alerts.tick()
    assert _said(slack) == [":red_circle: Segment sync *b*"]  # a's steps succeeded: the failed run does not fail a
    assert _alert_file(state_dir, "a")["told"]["failing"] is False

    duck.execute("alter table src drop column v")
    assert not alerts.materialize(*both).success  # both diffs fail
    alerts.tick()
    assert _said(slack)[1:] == [":red_circle: Segment sync *a*"]  # b was failing already

    duck.execute("alter table src add column v varchar")
    assert not alerts.materialize(*both).success
    alerts.tick()
    assert _said(slack)[2:] == [":large_green_circle: Segment sync *a*"]  # recovered, in a run b failed
    assert _alert_file(state_dir, "b")["told"]["failing"] is True


def test_a_failed_snapshot_alerts_every_sync_of_its_model(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    project = {
        "models": [
            {"name": "m", "table": "src", "primary_key": "id"},
            {"name": "n", "table": "src_n", "primary_key": "id"},
        ],
        "syncs": [
            {**TRACK, "name": name, "model": model} for name, model in [("a", "m"), ("b", "m"), ("c", "n"), ("d", "n")]
        ],
    }
    alerts = Alerts(project, instance)
    assert not alerts.materialize("snapshot/n").success  # table src_n does not exist
    alerts.tick()
    assert sorted(_said(slack)) == [":red_circle: Segment sync *c*", ":red_circle: Segment sync *d*"]
    assert all("> snapshot__n: model 'n': reading from duckdb" in text for text in slack.texts())

    duck.execute("create table src_n as select 1 as id, 'a' as uid, 'x' as v")
    assert alerts.run_users_job().success  # the whole group: four syncs
    alerts.tick()
    assert sorted(_said(slack)[2:]) == [
        ":large_green_circle: Segment sync *c*",
        ":large_green_circle: Segment sync *d*",
    ]


def test_runs_of_other_assets_in_the_code_location_say_nothing(duck, emulator, instance, slack, caplog):
    @dg.asset
    def unrelated() -> None:
        raise RuntimeError("not a sync")

    alerts = Alerts(_project(TRACK), instance)
    result = dg.materialize([unrelated], instance=instance, raise_on_error=False)
    assert not result.success
    with caplog.at_level(logging.DEBUG):
        alerts.tick()
    assert slack.requests == [] and "Slack" not in caplog.text
