"""A sync's channels, set up from its settings and the environment: those whose variables are unset are off."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import BaseModel

from segment_sync.alerts.settings import EmailSettings, PagerDutySettings, SlackSettings, WebhookSettings
from segment_sync.alerts.status import Poster

# Each channel's name in logs, and what it does with an alert.
_SAYS = {
    "slack": ("Slack", "posted to Slack"),
    "pagerduty": ("PagerDuty", "sent to PagerDuty"),
    "email": ("Email", "emailed"),
    "webhook": ("Webhook", "posted to the webhook"),
}


def posters(
    channels: Mapping[str, BaseModel],
    env: Mapping[str, str],
    *,
    group: str,
    log: logging.Logger,
    noted: set[str],
) -> dict[str, Poster]:
    """The posters of the channels that are set up; each one that is not is noted once in `noted` and the log."""
    found = {}
    for name, settings in channels.items():
        missing = _missing(settings, env)
        if missing:
            title, does = _SAYS[name]
            note = f"{title} alerts are off: set {' and '.join(missing)} to have sync failures {does}"
            if note not in noted:
                noted.add(note)
                log.info("%s", note)
            continue
        found[name] = _poster(settings, env, group)
    return found


def _missing(settings: BaseModel, env: Mapping[str, str]) -> list[str]:
    """The environment variables a channel needs and does not have."""
    if isinstance(settings, SlackSettings):
        needed = ["SLACK_BOT_TOKEN"] + ([] if settings.channel else ["SLACK_CHANNEL"])
    elif isinstance(settings, PagerDutySettings):
        needed = [settings.routing_key_env]
    elif isinstance(settings, EmailSettings):
        needed = [settings.password_env] if env.get(settings.username_env) else []
    else:
        assert isinstance(settings, WebhookSettings)
        needed = [settings.url_env]
    return [name for name in needed if not env.get(name)]


def _poster(settings: BaseModel, env: Mapping[str, str], group: str) -> Poster:
    # Each channel's client loads only when it is set up (loading the code location imports none of them)
    if isinstance(settings, SlackSettings):
        from segment_sync.alerts.slack import SlackPoster

        channel = settings.channel or env["SLACK_CHANNEL"]
        return SlackPoster(env["SLACK_BOT_TOKEN"], channel, base_url=env.get("SLACK_API_URL") or None)
    if isinstance(settings, PagerDutySettings):
        from segment_sync.alerts.pagerduty import PagerDutyPoster

        return PagerDutyPoster(
            env[settings.routing_key_env], settings, group=group, base_url=env.get("PAGERDUTY_EVENTS_URL") or None
        )
    if isinstance(settings, EmailSettings):
        from segment_sync.alerts.email import EmailPoster

        return EmailPoster(settings, env.get(settings.username_env) or None, env.get(settings.password_env) or None)
    from segment_sync.alerts.webhook import WebhookPoster

    assert isinstance(settings, WebhookSettings)
    secret = env.get(settings.secret_env) or None
    return WebhookPoster(env[settings.url_env], secret, settings.timeout_seconds, url_env=settings.url_env)
