"""PagerDuty, email and webhook alerts: real sync runs, the sensors called as the daemon would, and a real local
receiver for each (a stub of PagerDuty's Events API, an aiosmtpd SMTP server with STARTTLS and AUTH, a webhook
receiver that verifies signatures as the README says)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from segment_sync import SegmentSyncComponent
from segment_sync.alerts.messages import AlertMessage
from segment_sync.alerts.settings import AlertSettings
from segment_sync.alerts.status import alert_state
from segment_sync.alerts.webhook import SIGNATURE_HEADER
from segment_sync_tests.support.alert_runs import MISSING_COLUMN, Alerts, alert_file, one_sync_project
from segment_sync_tests.support.http_stub import Reply
from segment_sync_tests.support.pagerduty_stub import PagerDutyStub
from segment_sync_tests.support.slack_stub import SlackStub
from segment_sync_tests.support.smtp_server import SmtpServer, self_signed_certificate
from segment_sync_tests.support.sync_runs import TRACK
from segment_sync_tests.support.webhook_stub import WebhookStub, verify

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

ROUTING_KEY = "R0utingKEY0123456789abcdefSECRET"  # 32 characters, as PagerDuty's
WEBHOOK_SECRET = "whsec-SECRET-0123456789"
WEBHOOK_PATH = "/hooks/T0KEN-in-PATH-SECRET"
SMTP_USER = "alerts-user-SECRET"
SMTP_PASSWORD = "smtp-pw-SECRET-98765"
SECRETS = (ROUTING_KEY, WEBHOOK_SECRET, WEBHOOK_PATH, "T0KEN-in-PATH-SECRET", SMTP_USER, SMTP_PASSWORD)
UI = "http://dagster.test:3000"
PROJECT = one_sync_project(MISSING_COLUMN)
EMAIL = {"host": "localhost", "from_address": "segment-sync@example.com", "to": ["data-oncall@example.com"]}


@dataclass
class Channel:
    """One channel under test: its YAML settings, what it was told (message kinds, in order), how to break it."""

    name: str
    settings: dict[str, Any]
    said: Callable[[], list[str]]
    down: Callable[[], None]  # the next delivery fails in a way worth retrying
    texts: Callable[[], list[str]]  # everything the receiver got, to look for secrets in


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, duckdb_warehouse, state_dir) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    monkeypatch.setenv("DAGSTER_UI_URL", UI)
    for name in ("SLACK_BOT_TOKEN", "SLACK_CHANNEL", "PAGERDUTY_ROUTING_KEY", "ALERT_WEBHOOK_URL", "SMTP_USERNAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pagerduty(monkeypatch: pytest.MonkeyPatch) -> Iterator[PagerDutyStub]:
    with PagerDutyStub(routing_keys=(ROUTING_KEY,)) as stub:
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", stub.url)
        yield stub


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookStub]:
    with WebhookStub(secret=WEBHOOK_SECRET) as stub:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", stub.url + WEBHOOK_PATH)
        monkeypatch.setenv("ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        yield stub


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("smtp_tls"))


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """STARTTLS required, then AUTH; the client trusts the server's self-signed certificate through SSL_CERT_FILE."""
    with SmtpServer(tls="starttls", login=(SMTP_USER, SMTP_PASSWORD), certificate=certificate) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        monkeypatch.setenv("SMTP_USERNAME", SMTP_USER)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
        yield server


def _pagerduty_said(stub: PagerDutyStub) -> list[str]:
    kinds = {("trigger", False): "failing", ("resolve", False): "recovered"}
    kinds |= {("trigger", True): "rejecting", ("resolve", True): "rejecting_recovered"}
    return [kinds[(e["event_action"], e["dedup_key"].endswith("/rejected-rows"))] for e in stub.events()]


@pytest.fixture(params=["pagerduty", "email", "webhook"])
def channel(request: pytest.FixtureRequest) -> Channel:
    """Each of the three channels in turn, set up and running."""
    if request.param == "pagerduty":
        stub = request.getfixturevalue("pagerduty")
        return Channel(
            "pagerduty",
            {},
            lambda: _pagerduty_said(stub),
            lambda: stub.script(Reply(500, "{}")),
            lambda: [r.body.decode() for r in stub.requests],
        )
    if request.param == "email":
        server = request.getfixturevalue("smtp")
        return Channel(
            "email",
            {**EMAIL, "port": server.port},
            lambda: [m["X-Segment-Sync-Kind"] for m in server.messages],
            lambda: server.fail_next("451 4.3.0 Mailbox busy, try again later"),
            lambda: [m.as_string() for m in server.messages],
        )
    stub = request.getfixturevalue("webhook")
    return Channel(
        "webhook",
        {},
        lambda: [b["kind"] for b in stub.bodies()],
        lambda: stub.script(Reply(503, "busy")),
        lambda: [r.body.decode() + json.dumps(r.headers) for r in stub.requests],
    )


def _alerts(instance, channel: Channel, project: dict = PROJECT, **settings: Any) -> Alerts:
    return Alerts(project, instance, settings={channel.name: channel.settings, **settings})


def test_a_failing_sync_alerts_once_and_once_more_when_it_recovers(channel, duck_src, emulator, instance):
    alerts = _alerts(instance, channel)
    run, logs = alerts.run_and_evaluate()
    assert not run.success and channel.said() == ["failing"]
    assert not alerts.run_and_evaluate()[0].success
    assert channel.said() == ["failing"]  # still failing: nothing new to say

    duck_src.execute("alter table src add column plan varchar")
    assert alerts.run_and_evaluate()[0].success
    assert alerts.run_and_evaluate()[0].success
    assert channel.said() == ["failing", "recovered"]
    assert logs.text(logging.WARNING) == ""


def test_rejected_rows_above_the_threshold_alert_once_until_back_within(channel, duck, emulator, instance):
    duck.execute(
        "create table src as select i as id, case when i in (2, 3) then null else 'u' || i end as uid, "
        "'x' as v from range(1, 6) t(i)"
    )
    alerts = _alerts(instance, channel, project=one_sync_project(TRACK), rejected_rows_threshold={"t": "1"})
    assert alerts.run_and_evaluate()[0].success
    assert alerts.run_and_evaluate()[0].success  # the same two rows rejected again
    assert channel.said() == ["rejecting"]
    duck.execute("update src set uid = 'fixed' || id where uid is null")
    assert alerts.run_and_evaluate()[0].success
    assert channel.said() == ["rejecting", "rejecting_recovered"]


def test_an_alert_the_channel_did_not_take_is_sent_once_by_the_retry_sensor(
    channel, duck_src, emulator, instance, state_dir
):
    alerts = _alerts(instance, channel)
    channel.down()
    _, logs = alerts.run_and_evaluate()
    assert channel.said() == []
    assert "It will be" in logs.text(logging.WARNING) and "later evaluation" in logs.text(logging.WARNING)
    status = alert_file(state_dir)["channels"][channel.name]
    assert status["told"]["failing"] is False and list(status["pending"]) == ["failing"]

    reason, _ = alerts.retry()
    assert reason.skip_message == "Tried again the alerts of t"
    assert channel.said() == ["failing"]
    assert alerts.retry()[0].skip_message == "No alert is waiting"
    assert not alerts.run_and_evaluate()[0].success
    assert channel.said() == ["failing"]


def test_no_secret_reaches_the_logs_or_the_messages(channel, duck_src, emulator, instance, caplog):
    alerts = _alerts(instance, channel)
    channel.down()
    with caplog.at_level(logging.DEBUG):
        _, failed = alerts.run_and_evaluate()
        _, retried = alerts.retry()
        duck_src.execute("alter table src add column plan varchar")
        _, recovered = alerts.run_and_evaluate()
    assert channel.said() == ["failing", "recovered"]
    # urllib3's own DEBUG lines show a request's path (a webhook URL's token): a library's debugging, off by default
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    said = [failed.text(), retried.text(), recovered.text(), ours]
    received = channel.texts()
    if channel.name == "pagerduty":  # the routing key is how PagerDuty knows the integration: only at the top
        received = [json.dumps({k: v for k, v in json.loads(t).items() if k != "routing_key"}) for t in received]
    assert not [s for s in SECRETS for text in said + received if s in text]


@pytest.fixture
def duck_src(duck):
    """Table src without the column plan that MISSING_COLUMN maps, so its diff fails."""
    duck.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    return duck


@pytest.fixture
def duck(duckdb_warehouse):
    return duckdb_warehouse


# PagerDuty


def test_pagerduty_opens_one_incident_per_sync_and_resolves_it(pagerduty, duck_src, emulator, instance):
    alerts = Alerts(PROJECT, instance, settings={"pagerduty": {"severity": "critical"}})
    run, _ = alerts.run_and_evaluate()
    [incident] = pagerduty.incidents
    assert incident.dedup_key == "segment-sync/segment_sync/t" and not incident.resolved
    [trigger] = incident.events
    payload = trigger["payload"]
    assert payload["summary"].startswith("Segment sync t (model m) failed: diff__t: sync 't': model 'm' has no column")
    assert (payload["source"], payload["severity"], payload["component"]) == ("dagster.test:3000", "critical", "t")
    assert (payload["group"], payload["class"]) == ("segment_sync", "sync failure")
    details = payload["custom_details"]
    assert details["run_url"] == f"{UI}/runs/{run.result.run_id}" and details["model"] == "m"
    assert trigger["links"] == [{"href": details["run_url"], "text": f"Dagster run {run.result.run_id[:8]}"}]

    duck_src.execute("alter table src add column plan varchar")
    alerts.run_and_evaluate()
    assert incident.resolved and len(pagerduty.incidents) == 1
    assert incident.events[-1] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "segment-sync/segment_sync/t",
    }


def test_pagerduty_rejected_rows_are_a_warning_incident_of_their_own(pagerduty, duck, emulator, instance):
    duck.execute(
        "create table src as select i as id, case when i = 2 then null else 'u' || i end as uid, 'x' as v "
        "from range(1, 4) t(i)"
    )
    Alerts(one_sync_project(TRACK), instance, settings={"pagerduty": {}}).run_and_evaluate()
    [incident] = pagerduty.incidents
    assert incident.dedup_key == "segment-sync/segment_sync/t/rejected-rows"
    payload = incident.events[0]["payload"]
    assert payload["severity"] == "warning" and payload["class"] == "rejected rows"
    assert payload["summary"].startswith("Segment sync t (model m) rejected 1 of the 3 rows it tried to send (33%)")
    assert payload["custom_details"]["sample_keys"] == ["2"]


def test_pagerduty_refusing_an_event_is_logged_and_not_retried(pagerduty, duck_src, emulator, instance, state_dir):
    alerts = Alerts(PROJECT, instance, settings={"pagerduty": {}})
    pagerduty.script(
        Reply(
            400,
            json.dumps(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["'payload.summary' is missing"],
                }
            ),
        )
    )
    _, logs = alerts.run_and_evaluate()
    [error] = [r for r in logs.records if r.levelno == logging.ERROR]
    assert error.getMessage().startswith(
        "PagerDuty refused the trigger for sync 't' as invalid (HTTP 400: Event object is invalid; "
        "'payload.summary' is missing). It is dropped, not retried;"
    )
    assert alert_file(state_dir)["channels"]["pagerduty"] == {
        "told": {"failing": False, "rejecting": False},
        "pending": {},
    }
    assert alerts.retry()[0].skip_message == "No alert is waiting"
    assert len(pagerduty.requests) == 1
    alerts.run_and_evaluate()  # the next run of the failing sync tries once more
    assert [i.dedup_key for i in pagerduty.incidents] == ["segment-sync/segment_sync/t"]


def test_pagerduty_a_redirect_is_not_followed_and_the_event_is_sent_later(pagerduty, duck_src, emulator, instance):
    alerts = Alerts(PROJECT, instance, settings={"pagerduty": {}})
    with PagerDutyStub(routing_keys=(ROUTING_KEY,)) as elsewhere:
        pagerduty.script(Reply(307, headers={"Location": elsewhere.url}))
        _, logs = alerts.run_and_evaluate()
        assert elsewhere.requests == []  # the routing key went nowhere else
    assert "PagerDuty did not take the trigger for sync 't' (HTTP 307" in logs.text(logging.WARNING)
    alerts.retry()
    assert [i.dedup_key for i in pagerduty.incidents] == ["segment-sync/segment_sync/t"]


def test_pagerduty_routing_key_and_severity_per_sync(pagerduty, duck_src, emulator, instance, monkeypatch):
    project = one_sync_project(MISSING_COLUMN)
    project["syncs"].append({**MISSING_COLUMN, "name": "u"})
    pagerduty.routing_keys += ("O" * 32,)
    monkeypatch.setenv("PAGERDUTY_KEY_TEAM_U", "O" * 32)
    overrides = {"u": {"pagerduty": {"routing_key_env": "PAGERDUTY_KEY_TEAM_U", "severity": "info"}}}
    alerts = Alerts(project, instance, settings={"pagerduty": {}, "syncs": overrides})
    alerts.run_and_evaluate(sync="t")
    alerts.run_and_evaluate(sync="u")
    assert [(e["routing_key"], e["dedup_key"], e["payload"]["severity"]) for e in pagerduty.events()] == [
        (ROUTING_KEY, "segment-sync/segment_sync/t", "error"),
        ("O" * 32, "segment-sync/segment_sync/u", "info"),
    ]


def test_a_channel_without_its_variables_is_off_and_says_so_once(pagerduty, duck_src, emulator, instance, monkeypatch):
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY")
    project = one_sync_project(MISSING_COLUMN)
    project["syncs"].append({**MISSING_COLUMN, "name": "u"})
    alerts = Alerts(project, instance, settings={"pagerduty": {}})
    run = alerts.materialize("snapshot/m", "diff/t", "segment/t", "diff/u", "segment/u")
    logs = alerts.evaluate(run)
    assert [r.getMessage() for r in logs.records] == [
        "Slack alerts are off: set SLACK_BOT_TOKEN and SLACK_CHANNEL to have sync failures posted to Slack",
        "PagerDuty alerts are off: set PAGERDUTY_ROUTING_KEY to have sync failures sent to PagerDuty",
    ]
    assert pagerduty.requests == []


# Each channel keeps its own queue


def test_a_message_slack_took_but_pagerduty_did_not_is_retried_to_pagerduty_only(
    pagerduty, duck_src, emulator, instance, monkeypatch
):
    with SlackStub(token="xoxb-1-2-SECRET", channels=("#alerts",)) as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-SECRET")
        monkeypatch.setenv("SLACK_CHANNEL", "#alerts")
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        alerts = Alerts(PROJECT, instance, settings={"pagerduty": {}})
        pagerduty.script(
            Reply(
                429,
                json.dumps(
                    {"status": "throttle event", "message": "Requests for this service are arriving too quickly"}
                ),
            )
        )
        _, logs = alerts.run_and_evaluate()
        assert len(slack.texts()) == 1 and pagerduty.incidents == []
        assert "PagerDuty did not take the trigger for sync 't' (HTTP 429" in logs.text(logging.WARNING)
        assert alerts.retry()[0].skip_message == "Tried again the alerts of t"
        assert len(slack.texts()) == 1 and len(pagerduty.incidents) == 1


# Email


def test_email_says_what_failed_over_starttls_with_a_login(smtp, duck_src, emulator, instance):
    alerts = Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": smtp.port}})
    run, _ = alerts.run_and_evaluate()
    [email] = smtp.messages
    assert smtp.logins == [SMTP_USER] and smtp.envelopes == [("segment-sync@example.com", ["data-oncall@example.com"])]
    assert email["Subject"] == "[segment-sync] Segment sync t (model m) failed"
    assert (email["From"], email["To"], email["X-Segment-Sync-Sync"]) == (
        "segment-sync@example.com",
        "data-oncall@example.com",
        "t",
    )
    body = email.get_content()
    assert "Error: diff__t: sync 't': model 'm' has no column 'plan'" in body
    assert "So far: no diff; nothing delivered." in body and f"Run: {UI}/runs/{run.result.run_id}" in body


@pytest.mark.parametrize("tls", ["none", "ssl"])
def test_email_without_tls_or_with_tls_from_the_start(tls, certificate, duck_src, emulator, instance, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with SmtpServer(tls=tls, certificate=certificate) as server:  # no login: a relay inside the network
        Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": server.port, "tls": tls}}).run_and_evaluate()
        assert [m["X-Segment-Sync-Kind"] for m in server.messages] == ["failing"]


def test_email_a_wrong_password_is_retried_and_a_refused_recipient_dropped(
    smtp, duck_src, emulator, instance, monkeypatch, state_dir
):
    alerts = Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": smtp.port}})
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password")
    _, logs = alerts.run_and_evaluate()
    assert "it refused the login; check SMTP_USERNAME and SMTP_PASSWORD" in logs.text(logging.WARNING)
    assert smtp.messages == [] and "wrong-password" not in logs.text()
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    alerts.retry()
    assert len(smtp.messages) == 1

    duck_src.execute("alter table src add column plan varchar")
    smtp.fail_next("554 5.7.1 Recipient address rejected")
    _, logs = alerts.run_and_evaluate()
    assert "refused the alert email for sync 't' for good" in logs.text(logging.ERROR)
    assert alert_file(state_dir)["channels"]["email"]["pending"] == {}


def test_email_a_login_smtplib_cannot_encode_is_retried_not_a_broken_sensor(
    smtp, duck_src, emulator, instance, monkeypatch
):
    alerts = Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": smtp.port}})
    monkeypatch.setenv("SMTP_PASSWORD", "pässwort-non-ascii")
    _, logs = alerts.run_and_evaluate()
    assert "SMTP_USERNAME and SMTP_PASSWORD must hold ASCII characters only" in logs.text(logging.WARNING)
    assert smtp.messages == [] and "pässwort" not in logs.text()
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    alerts.retry()
    assert len(smtp.messages) == 1


def test_email_recipients_per_sync(smtp, duck_src, emulator, instance):
    overrides = {"t": {"email": {"to": ["team-t@example.com", "lead@example.com"]}}}
    Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": smtp.port}, "syncs": overrides}).run_and_evaluate()
    assert smtp.envelopes[0][1] == ["team-t@example.com", "lead@example.com"]


# Webhook


def test_webhook_posts_signed_json_that_the_readme_check_verifies(webhook, duck_src, emulator, instance):
    run, _ = Alerts(PROJECT, instance, settings={"webhook": {}}).run_and_evaluate()
    [request] = webhook.requests
    assert request.path == WEBHOOK_PATH and request.status == 200
    assert verify(WEBHOOK_SECRET, request.headers, request.body)
    assert not verify("another-secret", request.headers, request.body)
    assert not verify(WEBHOOK_SECRET, request.headers, request.body.replace(b"failing", b"recovered"))
    stale = int(request.headers["x-segment-sync-timestamp"]) + 301
    assert not verify(WEBHOOK_SECRET, request.headers, request.body, now=stale)  # a replay, 5 minutes later
    body = json.loads(request.body)
    assert body["id"] == f"t/failing/{run.result.run_id}" and body["version"] == 1
    assert (body["kind"], body["sync"], body["model"], body["run_url"]) == (
        "failing",
        "t",
        "m",
        f"{UI}/runs/{run.result.run_id}",
    )
    assert body["title"] == "Segment sync t (model m) failed" and body["text"].startswith(body["title"] + "\n")


def test_webhook_without_a_secret_is_unsigned_and_a_wrong_secret_is_retried(
    webhook, duck_src, emulator, instance, monkeypatch
):
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "not-the-receivers-secret")
    alerts = Alerts(PROJECT, instance, settings={"webhook": {}})
    _, logs = alerts.run_and_evaluate()
    assert "did not take the alert for sync 't' (HTTP 401" in logs.text(logging.WARNING)
    assert "not-the-receivers-secret" not in logs.text() and webhook.bodies() == []
    monkeypatch.delenv("ALERT_WEBHOOK_SECRET")
    webhook.secret = None
    alerts.retry()
    [taken] = [r for r in webhook.requests if r.status == 200]
    assert SIGNATURE_HEADER.lower() not in taken.headers


def test_webhook_unreachable_is_logged_without_its_url(webhook, duck_src, emulator, instance, monkeypatch):
    closed = webhook.url
    webhook.stop()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", closed + WEBHOOK_PATH)
    _, logs = Alerts(PROJECT, instance, settings={"webhook": {}}).run_and_evaluate()
    text = logs.text(logging.WARNING)
    assert "Could not reach the webhook at http://127.0.0.1 to post the alert for sync 't' (ConnectionError" in text
    assert "T0KEN-in-PATH" not in text and "check ALERT_WEBHOOK_URL and the network" in text


# Settings


def test_settings_are_strict_and_name_the_field():
    with pytest.raises(ValueError, match=r"pagerduty\.severty\n  Extra inputs are not permitted"):
        AlertSettings.model_validate({"pagerduty": {"severty": "critical"}})
    with pytest.raises(ValueError, match=r"pagerduty\.severity\n  Input should be 'critical', 'error'"):
        AlertSettings.model_validate({"pagerduty": {"severity": "high"}})
    with pytest.raises(ValueError, match=r"'oncall' is not an email address like alerts@example.com"):
        AlertSettings.model_validate({"email": {"to": ["oncall"]}})
    with pytest.raises(ValueError, match=r"alerts.syncs: no sync is named 'tt' \(syncs: t\)"):
        AlertSettings.model_validate({"syncs": {"tt": {"webhook": {}}}}).channels(["t"])
    with pytest.raises(ValueError, match=r"alerts.email: email alerts for sync 't' need from_address and to;"):
        AlertSettings.model_validate({"email": {"host": "smtp.example.com"}}).channels(["t"])


def test_per_sync_settings_replace_the_components_field_by_field():
    settings = AlertSettings.model_validate(
        {
            "pagerduty": {"severity": "critical"},
            "webhook": {"secret_env": "HOOK_SECRET"},
            "syncs": {
                "a": {"pagerduty": {"routing_key_env": "TEAM_A"}, "slack": {"enabled": False}},
                "b": {"email": EMAIL},
            },
        }
    )
    channels = settings.channels(["a", "b", "c"])
    assert {sync: sorted(c) for sync, c in channels.items()} == {
        "a": ["pagerduty", "webhook"],
        "b": ["email", "pagerduty", "slack", "webhook"],
        "c": ["pagerduty", "slack", "webhook"],
    }
    assert (channels["a"]["pagerduty"].routing_key_env, channels["a"]["pagerduty"].severity) == ("TEAM_A", "critical")
    assert channels["c"]["pagerduty"].routing_key_env == "PAGERDUTY_ROUTING_KEY"


def test_an_alert_status_of_the_slack_only_format_is_read_as_slack(tmp_path: Path, caplog):
    old = {"format": 1, "told": {"failing": True}, "last_run_at": 5.0, "pending": {"rejecting": {"text": "..."}}}
    (tmp_path / "alerts.json").write_text(json.dumps(old))
    with alert_state(tmp_path, logging.getLogger(__name__)) as state:
        assert state.last_run_at == 5.0 and list(state.channels) == ["slack"]
        assert state.channels["slack"].told == {"failing": True, "rejecting": False}
        assert state.channels["slack"].pending == {}
    assert "holds Slack messages queued by an older segment-sync (rejecting); they are dropped" in caplog.text
    assert json.loads((tmp_path / "alerts.json").read_text())["format"] == 2


def test_a_message_survives_its_json():
    message = AlertMessage(
        "rejecting", "t", "m", "r1", "http://x/runs/r1", 1.0, reasons=[("no user id", 2)], sample_keys=["1", None]
    )
    assert AlertMessage.from_json(json.loads(json.dumps(message.to_json()))) == message


# The component's YAML


def _component(alerts: dict) -> dg.Definitions:
    attributes = {**one_sync_project(TRACK), "alerts": alerts}
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            return defs


def test_the_component_reads_every_channel_from_yaml():
    overrides = {"t": {"email": {"to": ["team-t@example.com"]}, "pagerduty": {"severity": "critical"}}}
    alerts = {"pagerduty": {}, "email": EMAIL, "webhook": {"secret_env": "HOOK_SECRET"}, "syncs": overrides}
    defs = _component(alerts)
    assert sorted(s.name for s in defs.sensors if "_alerts_" in s.name) == [
        "segment_sync_alerts_on_failure",
        "segment_sync_alerts_on_success",
        "segment_sync_alerts_retry",
    ]


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ({"pagerduty": {"severty": "critical"}}, "severty"),
        ({"webhook": {"url": "https://example.com/hook"}}, "url"),  # only url_env: the URL often holds a token
        ({"email": {"host": "smtp.example.com"}}, "defs.yaml: attributes.alerts.email: email alerts for sync 't' need"),
        ({"syncs": {"tt": {"webhook": {}}}}, "defs.yaml: attributes.alerts.syncs: no sync is named 'tt' (syncs: t)"),
        ({"syncs": {"t": {"sms": {}}}}, "sms"),
    ],
)
def test_bad_alert_settings_are_a_clear_error(alerts, expected):
    with pytest.raises(Exception) as info:
        _component(alerts)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert expected in "".join(chain)
