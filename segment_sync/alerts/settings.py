"""Alert settings as declared in YAML: the channels for the whole component, and each sync's overrides.

Secrets never appear here: only the names of the environment variables that hold them, read when an alert is
sent. A channel whose variables are unset is off (the sensors say so in their log).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Severity = Literal["critical", "error", "warning", "info"]
CHANNELS = ("slack", "pagerduty", "email", "webhook")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackSettings(_Strict):
    """Slack: the bot token from SLACK_BOT_TOKEN, the channel from here or SLACK_CHANNEL."""

    enabled: bool = Field(default=True, description="Post to Slack when SLACK_BOT_TOKEN and a channel are set.")
    channel: str | None = Field(default=None, description="Channel to post to, e.g. #data-alerts; else SLACK_CHANNEL.")


class PagerDutySettings(_Strict):
    """PagerDuty's Events API v2: an incident per failing sync, resolved when it recovers."""

    enabled: bool = Field(default=True, description="Send events when the routing key's variable is set.")
    routing_key_env: str = Field(
        default="PAGERDUTY_ROUTING_KEY", description="Environment variable with the integration's routing key."
    )
    severity: Severity = Field(default="error", description="Severity of a failing sync's incident.")
    rejected_rows_severity: Severity = Field(
        default="warning", description="Severity of the incident for rejected rows above the sync's threshold."
    )


class EmailSettings(_Strict):
    """Email through an SMTP server; the login (if any) from the environment."""

    enabled: bool = Field(default=True, description="Send email (host, from_address and to must be set).")
    host: str | None = Field(default=None, description="SMTP server, e.g. smtp.example.com.")
    port: int = Field(default=587, description="SMTP port: 587 for starttls, 465 for ssl, 25 for none.")
    tls: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="starttls (upgrade after connecting), ssl (TLS from the start) or none."
    )
    from_address: str | None = Field(default=None, description="Sender, e.g. segment-sync@example.com.")
    to: list[str] = Field(default_factory=list, description="Recipients.")
    username_env: str = Field(default="SMTP_USERNAME", description="Variable with the login; unset: no login.")
    password_env: str = Field(default="SMTP_PASSWORD", description="Variable with the password (with a login).")
    timeout_seconds: float = Field(default=10.0, description="Timeout of each SMTP command.")

    @field_validator("from_address")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is not None:
            _check_address(value)
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 < value < 65536:
            raise ValueError(f"port {value} is not a TCP port (1 to 65535)")
        return value


class WebhookSettings(_Strict):
    """A JSON POST to any URL, signed with a shared secret when one is set."""

    enabled: bool = Field(default=True, description="Post when the URL's variable is set.")
    url_env: str = Field(
        default="ALERT_WEBHOOK_URL", description="Environment variable with the URL (it often holds a token)."
    )
    secret_env: str = Field(
        default="ALERT_WEBHOOK_SECRET", description="Environment variable with the signing secret; unset: unsigned."
    )
    timeout_seconds: float = Field(default=10.0, description="Timeout of the request.")


class SyncChannels(_Strict):
    """One sync's overrides: each field set here replaces the component's for that sync."""

    slack: SlackSettings | None = None
    pagerduty: PagerDutySettings | None = None
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None


class AlertSettings(_Strict):
    """Alerts to Slack (on when its variables are set), PagerDuty, email and webhooks (each on when declared)."""

    enabled: bool = Field(default=True, description="Run the alert sensors (each channel sends only when set up).")
    ui_url: str | None = Field(
        default=None, description="Base URL of the Dagster UI for run links; else DAGSTER_UI_URL, else localhost:3000."
    )
    rejected_rows_threshold: dict[str, str] = Field(
        default_factory=dict,
        description='Per sync: warn above this many rejected rows ("25") or share of rows sent ("5%"); default "0".',
    )
    slack: SlackSettings = Field(default_factory=SlackSettings)
    pagerduty: PagerDutySettings | None = Field(default=None, description="Off unless declared.")
    email: EmailSettings | None = Field(default=None, description="Off unless declared.")
    webhook: WebhookSettings | None = Field(default=None, description="Off unless declared.")
    syncs: dict[str, SyncChannels] = Field(
        default_factory=dict, description="Per sync: channel settings that replace the component's, field by field."
    )

    def channels(self, syncs: list[str]) -> dict[str, dict[str, BaseModel]]:
        """Each sync's enabled channels (name -> settings): the component's, with the sync's overrides on top."""
        unknown = sorted(set(self.syncs) - set(syncs))
        if unknown:
            raise ValueError(
                f"alerts.syncs: no sync is named {', '.join(map(repr, unknown))} (syncs: {', '.join(syncs)})"
            )
        chosen: dict[str, dict[str, BaseModel]] = {}
        for sync in syncs:
            overrides = self.syncs.get(sync, SyncChannels())
            chosen[sync] = {}
            for name in CHANNELS:
                base, override = getattr(self, name), getattr(overrides, name)
                settings = _merged(base, override)
                if settings is None or not settings.enabled:
                    continue
                if isinstance(settings, EmailSettings):
                    _check_email(settings, sync, "email" if override is None else f"syncs.{sync}.email")
                chosen[sync][name] = settings
        return chosen


def _merged(base: BaseModel | None, override: BaseModel | None) -> BaseModel | None:
    """The component's settings with the fields the sync set on top."""
    if base is None or override is None:
        return override or base
    return base.model_copy(update=override.model_dump(exclude_unset=True))


def _check_email(settings: EmailSettings, sync: str, where: str) -> None:
    missing = [name for name in ("host", "from_address", "to") if not getattr(settings, name)]
    if missing:
        raise ValueError(
            f"alerts.{where}: email alerts for sync {sync!r} need {' and '.join(missing)}; set "
            f"{'them' if len(missing) > 1 else 'it'} under alerts.email, or under alerts.syncs.{sync}.email"
        )


def _check_address(address: str) -> None:
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() or c in "<>,;" for c in address):
        raise ValueError(f"{address!r} is not an email address like alerts@example.com")
