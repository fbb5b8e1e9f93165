"""Slack alerts: real sync runs, the sensors called as the daemon would, and a local stub of Slack's Web API."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from segment_sync.alerts import RejectedThreshold, parse_thresholds
from segment_sync_tests.conftest import TRACK, SyncRun, make_definitions, run_sync
from segment_sync_tests.segment_emulator import Fault
from segment_sync_tests.slack_stub import Reply, SlackStub

TOKEN = "xoxb-1111-2222-SECRETtokenVALUE"
WRONG_TOKEN = "xoxb-9999-OTHERsecretVALUE"
CHANNEL = "#sync-alerts"
UI = "http://dagster.test:3000"
MISSING_COLUMN = {**TRACK, "fields": ["v", "plan"]}


def _project(sync: dict) -> dict:
    return {"models": [{"name": "m", "table": "src", "primary_key": "id"}], "syncs": [sync]}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@dataclass
class Alerts:
    """A sync's definitions and its alert sensors, evaluated against real runs."""

    project: dict
    instance: dg.DagsterInstance
    threshold: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.definitions = make_definitions(self.project, alerts={"rejected_rows_threshold": self.threshold or {}})
        self.sensors = [s for s in self.definitions.sensors if "_slack_" in s.name]

    def run(self, instance: dg.DagsterInstance | None = None, sync: str = "t") -> SyncRun:
        """Run a sync's job."""
        return run_sync(self.definitions, sync, instance or self.instance)

    def evaluate(self, run: SyncRun, instance: dg.DagsterInstance | None = None) -> _Records:
        """Call the sensor that sees this run, with the context dagster's docs build; return what it logged."""
        result = run.result
        failure, success, _ = self.sensors
        sensor = success if run.success else failure
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance or self.instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event() if run.success else result.get_run_failure_event(),
        )
        if not run.success:
            context = context.for_run_failure()
        logs = _Records()
        context.log.addHandler(logs)
        sensor(context)
        return logs

    def run_and_evaluate(self, instance: dg.DagsterInstance | None = None, sync: str = "t") -> tuple[SyncRun, _Records]:
        """Run a sync and evaluate the sensor that sees the run."""
        run = self.run(instance, sync)
        return run, self.evaluate(run, instance)

    def retry(self) -> tuple[dg.SkipReason, _Records]:
        """One evaluation of the retry sensor."""
        context = dg.build_sensor_context(instance=self.instance)
        logs = _Records()
        context.log.addHandler(logs)
        return self.sensors[2](context), logs


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


def _alert_file(state_dir: Path) -> dict:
    return json.loads((state_dir / "syncs" / "t" / "alerts.json").read_text())


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
        "segment_sync_slack_on_failure",
        "segment_sync_slack_on_success",
        "segment_sync_slack_retry",
    ]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in alerts.sensors)
    dg.Definitions.validate_loadable(alerts.definitions)


def test_a_daemon_tick_of_the_failure_sensor_finds_the_failed_run(duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    failure = alerts.sensors[0]
    repository = alerts.definitions.get_repository_def()
    first = failure.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repository))
    run = alerts.run()
    failure.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repository, cursor=first.cursor))
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
    assert alerts.retry()[0].skip_message == "Slack alerts are off"
    assert slack.requests == [] and not (state_dir / "syncs" / "t" / "alerts.json").exists()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/api/"


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
    mode, requests, logged, duck, emulator, instance, slack, monkeypatch, caplog, state_dir
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
        monkeypatch.setenv("SLACK_API_URL", _closed_port_url())
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
    assert [t.split(" (model")[0] for t in slack.texts()] == [":red_circle: Segment sync *u*"]
    assert alerts.retry()[0].skip_message == "Tried again the alerts of t"
    assert [t.split(" (model")[0] for t in slack.texts()] == [
        ":red_circle: Segment sync *u*",
        ":red_circle: Segment sync *t*",
    ]


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


@pytest.mark.parametrize("config", [{"dry_run": True}, {"test_row": "1"}])
def test_dry_runs_and_test_rows_say_nothing_about_the_sync(config, duck, emulator, instance, slack):
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    alerts = Alerts(_project(MISSING_COLUMN), instance)
    alerts.run_and_evaluate()
    duck.execute("alter table src add column plan varchar")
    job = alerts.definitions.resolve_job_def("sync_t")
    manual = job.execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {"segment__t": {"config": config}}}
    )
    assert manual.success
    alerts.evaluate(SyncRun(manual))
    assert len(slack.texts()) == 1  # still failing, as far as Slack knows
    alerts.run_and_evaluate()
    assert "has recovered" in slack.texts()[1]
