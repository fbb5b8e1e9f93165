"""The alert channels' secrets never leak: PagerDuty's routing key, the SMTP password, the webhook's signing secret
(and the token in its URL) appear in no message a receiver got (beyond the field that must carry them), no log of
the sensors, no event of Dagster's storage, no file of the state folder and no text of a channel's failure.

Each test runs real failing syncs and evaluates the alert sensors as the sensor daemon does: a context per tick with
the instance's ref and a log key, so what the sensors log is captured into the instance's storage, where the UI
shows a tick's logs. Each channel fails as it can in the field before it takes the alert, some receivers echoing the
secret in their answers (which the channels must redact), some of those answers long enough to be cut in the log.
"""

from __future__ import annotations

import base64
import json
import logging
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from aiosmtpd.smtp import AuthResult

from segment_sync_tests.support.alert_runs import MISSING_COLUMN, Alerts, Records, alert_file, one_sync_project
from segment_sync_tests.support.http_stub import Reply
from segment_sync_tests.support.pagerduty_stub import PagerDutyStub
from segment_sync_tests.support.smtp_server import SmtpServer, self_signed_certificate
from segment_sync_tests.support.sync_runs import SyncRun
from segment_sync_tests.support.webhook_stub import WebhookStub, verify

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

ROUTING_KEY = "pd-secret-routing-key-7f3a"
SMTP_USER = "alerts-user"
SMTP_PASSWORD = "smtp-pw-Qz9-hunter2-8c1e"
WEBHOOK_SECRET = "whsec-signing-K4v-0b6d"
WEBHOOK_TOKEN = "wh-url-token-5e2b"
# As long as a Microsoft Teams incoming webhook's path: longer than what a log line keeps of an error
WEBHOOK_PATH = f"/webhookb2/{WEBHOOK_TOKEN}/IncomingWebhook/" + "0123456789abcdef" * 8
FRAGMENT = 10  # characters of a secret that are a leak: a log line cut inside a secret shows its start
PROJECT = one_sync_project(MISSING_COLUMN)
UI = "http://dagster.test:3000"
EMAIL = {"host": "localhost", "from_address": "segment-sync@example.com", "to": ["data-oncall@example.com"]}
RECEIVERS_LOGGERS = ("mail.log",)  # aiosmtpd's own DEBUG lines show what the client sent, AUTH included


def _fragments(secret: str) -> set[str]:
    n = min(FRAGMENT, len(secret))
    return {secret[i : i + n] for i in range(len(secret) - n + 1)}


def leaks(secrets: dict[str, str], texts: dict[str, str]) -> list[str]:
    """`<secret> in <where>` for each text holding a secret, whole or FRAGMENT characters of it."""
    return [
        f"{name} in {where}"
        for where, text in texts.items()
        for name, secret in secrets.items()
        if any(part in text for part in _fragments(secret))
    ]


def assert_no_leak(secrets: dict[str, str], texts: dict[str, str]) -> None:
    """No text holds a secret; else the failure shows each leak in its context."""
    shown = []
    for where, text in texts.items():
        for name, secret in secrets.items():
            for part in sorted(p for p in _fragments(secret) if p in text)[:1]:
                at = text.index(part)
                shown.append(f"{name} in {where}: ...{text[max(0, at - 80) : at + 40]!r}...")
    assert leaks(secrets, texts) == [], "\n".join(shown)


def _assert_search_finds(secrets: dict[str, str]) -> None:
    """The search finds each secret whole, cut as a log cuts it, and in bytes read from a file; not its placeholder."""
    for name, secret in secrets.items():
        assert leaks({name: secret}, {"whole": f"x{secret}y"}) == [f"{name} in whole"]
        assert leaks({name: secret}, {"cut": f"(HTTP 400: ...; {secret[:FRAGMENT]}…)"}) == [f"{name} in cut"]
        assert leaks({name: secret}, {"end": f"{secret[-FRAGMENT:]}')"}) == [f"{name} in end"]
        assert leaks({name: secret}, {"file": _decoded(b"\x00\x01" + secret.encode())}) == [f"{name} in file"]
        assert leaks({name: secret}, {"redacted": "(HTTP 400: [PAGERDUTY_ROUTING_KEY]; [<secret>]…)"}) == []


def _assert_cut_inside(text: str, secret: str, limit: int) -> None:
    """Cut at `limit` characters, as segment-sync cuts an error for a log, the text keeps a FRAGMENT of the secret."""
    start = text.index(secret)
    assert start + FRAGMENT <= limit - 1 < start + len(secret)


def _decoded(data: bytes) -> str:
    return data.decode("latin-1")  # one character per byte: a secret's bytes stay a substring


def files(folder: Path) -> dict[str, str]:
    """Every file under a folder (the state folder, Dagster's storage), as text."""
    return {str(p): _decoded(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Daemon:
    """The alert sensors of `alerts`, evaluated as the sensor daemon does, their logs captured by the instance."""

    alerts: Alerts
    log_keys: list[list[str]] = field(default_factory=list)
    logs: Records = field(default_factory=Records)  # the same records, kept here too

    def tick(self) -> None:
        """One tick of the failure and success sensors: each finds the runs that finished since its last."""
        for sensor in self.alerts.sensors[:2]:
            result = self._evaluate(sensor, self.alerts.cursors.get(sensor.name))
            assert [r.error.to_string() for r in result.dagster_run_reactions if r.error] == []
            self.alerts.cursors[sensor.name] = result.cursor

    def retry(self) -> str | None:
        """One tick of the retry sensor; its skip message."""
        return self._evaluate(self.alerts.sensors[2], None).skip_message

    def captured(self) -> str:
        """What every tick logged, as the instance keeps it for the UI."""
        manager = self.alerts.instance.compute_log_manager
        return "\n".join(_decoded(manager.get_log_data(key).stderr or b"") for key in self.log_keys)

    def _evaluate(self, sensor: dg.SensorDefinition, cursor: str | None) -> Any:
        repository = self.alerts.definitions.get_repository_def()
        key = [repository.name, sensor.name, f"tick_{len(self.log_keys)}"]
        self.log_keys.append(key)
        instance = self.alerts.instance
        context = dg.SensorEvaluationContext(
            instance_ref=instance.get_ref(),
            instance=instance,
            repository_def=repository,
            sensor_name=sensor.name,  # no repository_name: a run in process is of no code location's repository
            cursor=cursor,
            log_key=key,
        )
        with context:
            context.log.addHandler(self.logs)
            return sensor.evaluate_tick(context)


@dataclass
class Seen:
    """Everything a test's runs and ticks left outside the receivers, by where it is."""

    texts: dict[str, str]

    @classmethod
    def gather(
        cls, daemon: Daemon, runs: list[SyncRun], tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: Any
    ) -> Seen:
        instance = daemon.alerts.instance
        out = capfd.readouterr()
        texts = {
            "the sensors' logs": daemon.logs.text(),
            "the ticks' logs captured by Dagster": daemon.captured(),
            "Python's logging": "\n".join(
                f"{r.name}: {r.getMessage()}" for r in caplog.records if not r.name.startswith(RECEIVERS_LOGGERS)
            ),
            "stdout and stderr": out.out + out.err,
        }
        for run in runs:
            run_id = run.result.run_id
            entries = instance.all_logs(run_id)
            texts[f"the event log of run {run_id}"] = "\n".join(dg.serialize_value(e) for e in entries)
            texts[f"the errors of run {run_id}"] = run.error_text()
        texts |= files(tmp_path)  # the state folder, the warehouse and Dagster's storage (with the ticks' logs)
        return cls(texts)

    def check(self, runs: list[SyncRun], tmp_path: Path, state_dir: Path) -> None:
        """Each place was really searched: it holds what the runs and ticks wrote there."""
        assert [where for where, text in self.texts.items() if not text and not Path(where).is_file()] == []
        for run in runs:
            assert run.result.run_id in self.texts[f"the event log of run {run.result.run_id}"]
            assert "model 'm' has no column 'plan'" in self.texts[f"the errors of run {run.result.run_id}"]
        assert "It will be" in self.texts["the sensors' logs"]
        assert "It will be" in self.texts["the ticks' logs captured by Dagster"]
        assert "It will be" in self.texts["stdout and stderr"]  # the daemon's console
        assert str(state_dir / "syncs" / "t" / "alerts.json") in self.texts
        assert any("It will be" in text for where, text in self.texts.items() if where.startswith(str(tmp_path)))


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, duckdb_warehouse, state_dir, caplog) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", duckdb_warehouse.url)
    monkeypatch.setenv("DAGSTER_UI_URL", UI)
    for name in ("SLACK_BOT_TOKEN", "SLACK_CHANNEL", "PAGERDUTY_ROUTING_KEY", "ALERT_WEBHOOK_URL", "SMTP_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose storage is under tmp_path, to be searched with the state folder."""
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


@pytest.fixture
def duck_src(duckdb_warehouse):
    """Table src without the column plan that MISSING_COLUMN maps, so its diff fails."""
    duckdb_warehouse.execute("create table src as select 1 as id, 'a' as uid, 'x' as v")
    return duckdb_warehouse


def test_the_search_finds_each_secret_and_the_file_scan_reads_every_file(tmp_path: Path):
    secrets = {
        "routing key": ROUTING_KEY,
        "SMTP password": SMTP_PASSWORD,
        "signing secret": WEBHOOK_SECRET,
        "URL token": WEBHOOK_TOKEN,
    }
    _assert_search_finds(secrets)
    canary = tmp_path / "deep" / "er" / "events.db"
    canary.parent.mkdir(parents=True)
    canary.write_bytes(b"SQLite format 3\x00" + WEBHOOK_SECRET[:12].encode() + b"\xff")
    assert leaks(secrets, files(tmp_path)) == [f"signing secret in {canary}"]


def test_the_pagerduty_routing_key_is_only_in_the_events_routing_key_field(
    duck_src, emulator, instance, monkeypatch, tmp_path, state_dir, caplog, capfd, refused_url
):
    secrets = {"routing key": ROUTING_KEY}
    _assert_search_finds(secrets)
    echo = f"Invalid routing key {ROUTING_KEY}"
    # PagerDuty's answer is cut at 300 characters in the log: this one ends with the key across the cut
    filler = ("'payload.summary' must be a string of 1 to 1024 characters; " * 5)[:238]
    long_answer = json.dumps({"message": "Event object is invalid", "errors": [filler, echo]})
    _assert_cut_inside(f"Event object is invalid; {filler}; {echo}", ROUTING_KEY, 300)
    with PagerDutyStub(routing_keys=(ROUTING_KEY,)) as stub:
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", stub.url)
        daemon = Daemon(Alerts(PROJECT, instance, settings={"pagerduty": {}}))
        runs = []

        stub.script(Reply(500, json.dumps({"status": "error", "message": echo})))  # trouble, and says the key
        runs.append(daemon.alerts.run())
        daemon.tick()
        assert "(HTTP 500: Invalid routing key [PAGERDUTY_ROUTING_KEY])" in daemon.logs.text(logging.WARNING)
        stub.script(Reply(400, long_answer))  # refused for good: dropped
        assert daemon.retry() == "Tried again the alerts of t"
        assert "PagerDuty refused the trigger for sync 't' as invalid" in daemon.logs.text(logging.ERROR)
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", refused_url)  # unreachable at the next failed run
        runs.append(daemon.alerts.run())
        daemon.tick()
        assert "Could not reach PagerDuty to send the trigger" in daemon.logs.text(logging.WARNING)
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", stub.url)
        assert daemon.retry() == "Tried again the alerts of t"
        duck_src.execute("alter table src add column plan varchar")
        assert daemon.alerts.run().success
        daemon.tick()

    assert [e["event_action"] for e in stub.events()] == ["trigger", "resolve"]
    assert [r.status for r in stub.requests] == [500, 400, 202, 202]
    seen = Seen.gather(daemon, runs, tmp_path, caplog, capfd)
    seen.check(runs, tmp_path, state_dir)
    received = {}
    for i, request in enumerate(stub.requests):
        event = json.loads(request.body)
        assert event.pop("routing_key") == ROUTING_KEY  # the one place it must be: how PagerDuty knows the service
        assert leaks(secrets, {"the raw event": request.body.decode()}) == ["routing key in the raw event"]
        received[f"event {i} sent to PagerDuty"] = json.dumps(event) + json.dumps(request.headers)
    assert "Segment sync t (model m) failed" in received["event 0 sent to PagerDuty"]
    assert_no_leak(secrets, received)
    assert_no_leak(secrets, seen.texts)


@dataclass
class EchoingSmtpServer(SmtpServer):
    """An SMTP server that, while `refusal` is set, refuses every login with it: a reply that may echo the password."""

    refusal: str | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if self.refusal is not None:
            return AuthResult(success=False, handled=False, message=self.refusal)
        return super()._authenticate(server, session, envelope, mechanism, data)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("smtp_tls"))


def test_the_smtp_password_is_nowhere_whatever_the_server_answers(
    duck_src, emulator, instance, monkeypatch, certificate, tmp_path, state_dir, caplog, capfd
):
    login_blob = base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode()  # AUTH PLAIN's
    secrets = {
        "SMTP password": SMTP_PASSWORD,
        "SMTP password in AUTH PLAIN": login_blob,
        "SMTP password in AUTH LOGIN": base64.b64encode(SMTP_PASSWORD.encode()).decode(),
    }
    _assert_search_finds(secrets)
    # The error is cut at 300 characters in the log: this refusal has the password across the cut
    filler = ("Authentication credentials invalid, see https://support.example.com/smtp-auth " * 5)[:257]
    long_refusal = f"535 5.7.8 {filler} bad password {SMTP_PASSWORD}"
    code, _, text = long_refusal.partition(" ")
    _assert_cut_inside(str(smtplib.SMTPAuthenticationError(int(code), text.encode())), SMTP_PASSWORD, 300)
    with EchoingSmtpServer(tls="starttls", login=(SMTP_USER, SMTP_PASSWORD), certificate=certificate) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        monkeypatch.setenv("SMTP_USERNAME", SMTP_USER)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
        daemon = Daemon(Alerts(PROJECT, instance, settings={"email": {**EMAIL, "port": server.port}}))
        runs = []

        server.refusal = f"535 5.7.8 Password {SMTP_PASSWORD} is not the password of {SMTP_USER}"
        runs.append(daemon.alerts.run())
        daemon.tick()
        assert "Password [SMTP_PASSWORD] is not the password" in daemon.logs.text(logging.WARNING)
        server.refusal = long_refusal
        assert daemon.retry() == "Tried again the alerts of t"
        assert daemon.logs.text(logging.WARNING).count("it refused the login; check SMTP_USERNAME") == 2
        server.refusal = None
        server.fail_next("451 4.3.0 Mailbox busy, try again later")  # logged in, then deferred
        assert daemon.retry() == "Tried again the alerts of t"
        assert daemon.retry() == "Tried again the alerts of t"
        duck_src.execute("alter table src add column plan varchar")
        assert daemon.alerts.run().success
        daemon.tick()

    assert [m["X-Segment-Sync-Kind"] for m in server.messages] == ["failing", "recovered"]
    assert server.logins == [SMTP_USER, SMTP_USER, SMTP_USER]  # the password was really sent, 3 times taken
    assert alert_file(state_dir)["channels"]["email"]["pending"] == {}
    seen = Seen.gather(daemon, runs, tmp_path, caplog, capfd)
    seen.check(runs, tmp_path, state_dir)
    received = {f"email {i}": m.as_string() for i, m in enumerate(server.messages)}
    received["envelopes"] = json.dumps(server.envelopes)
    assert "Segment sync t (model m) failed" in received["email 0"]
    assert_no_leak(secrets, received)
    assert_no_leak(secrets, seen.texts)


def test_the_webhook_signing_secret_and_url_token_are_nowhere(
    duck_src, emulator, instance, monkeypatch, tmp_path, state_dir, caplog, capfd, refused_url
):
    secrets = {"signing secret": WEBHOOK_SECRET, "URL token": WEBHOOK_TOKEN}
    _assert_search_finds(secrets)
    closed = refused_url + WEBHOOK_PATH
    with pytest.raises(requests.ConnectionError) as down:
        requests.post(closed, timeout=5)
    assert leaks(secrets, {"a refused connection's error": str(down.value)}) == [
        "URL token in a refused connection's error"
    ]  # what the webhook's log line must not show
    # The receiver's answer is cut at 200 characters in the log: this one ends with the secret across the cut
    filler = ("Signature mismatch: sign the timestamp and the raw body. " * 4)[:174]
    long_answer = json.dumps({"error": filler + WEBHOOK_SECRET})
    _assert_cut_inside(long_answer, WEBHOOK_SECRET, 200)
    with WebhookStub(secret=WEBHOOK_SECRET) as stub:
        monkeypatch.setenv("ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        monkeypatch.setenv("ALERT_WEBHOOK_URL", closed)
        daemon = Daemon(Alerts(PROJECT, instance, settings={"webhook": {}}))
        runs = []

        runs.append(daemon.alerts.run())
        daemon.tick()
        assert "Could not reach the webhook at http://127.0.0.1 to post" in daemon.logs.text(logging.WARNING)
        monkeypatch.setenv("ALERT_WEBHOOK_URL", stub.url + WEBHOOK_PATH)
        stub.script(
            Reply(401, json.dumps({"error": f"signature mismatch: expected a signature by {WEBHOOK_SECRET}"})),
            Reply(401, long_answer),
            Reply(503, "busy"),
        )
        for _ in range(4):
            assert daemon.retry() == "Tried again the alerts of t"
        assert "expected a signature by [<secret>]" in daemon.logs.text(logging.WARNING)
        duck_src.execute("alter table src add column plan varchar")
        assert daemon.alerts.run().success
        daemon.tick()

    assert [b["kind"] for b in stub.bodies()] == ["failing", "recovered"]
    assert [r.status for r in stub.requests] == [401, 401, 503, 200, 200]
    assert all(verify(WEBHOOK_SECRET, r.headers, r.body) for r in stub.requests)  # each signed with the secret
    seen = Seen.gather(daemon, runs, tmp_path, caplog, capfd)
    seen.check(runs, tmp_path, state_dir)
    # every header is searched, the signature too: an HMAC of the body, not the secret
    received = {f"request {i}": r.body.decode() + json.dumps(r.headers) for i, r in enumerate(stub.requests)}
    assert "Segment sync t (model m) failed" in received["request 3"] and "sha256=" in received["request 3"]
    assert_no_leak(secrets, received)
    # urllib3's DEBUG lines show a request's path (the URL's token): a library's debugging, off by default
    urllib3 = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert leaks(secrets, {"urllib3": "\n".join(urllib3)}) == ["URL token in urllib3"]
    texts = dict(seen.texts)
    texts["Python's logging"] = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("urllib3", *RECEIVERS_LOGGERS))
    )
    assert_no_leak(secrets, texts)
