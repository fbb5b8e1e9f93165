"""Slack: a message in mrkdwn, posted with slack-sdk; short, bounded retries, and what Slack did not take logged."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryHandler, RetryState
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from segment_sync.alerts.messages import AlertMessage, short_error
from segment_sync.alerts.plain_text import counts_text, key_text
from segment_sync.alerts.status import Delivery
from segment_sync.alerts.thresholds import count_text

MAX_RETRY_AFTER_SECONDS = 5  # a longer rate-limit wait is left to a later evaluation
RETRIES = 1  # within one evaluation; the retry sensor tries again a minute later
TIMEOUT_SECONDS = 10
_HINTS = {
    "invalid_auth": "SLACK_BOT_TOKEN is not a valid token; use the bot token (xoxb-...) of the Slack app",
    "not_authed": "no token reached Slack; check SLACK_BOT_TOKEN",
    "token_revoked": "SLACK_BOT_TOKEN was revoked; reinstall the Slack app and update the token",
    "account_inactive": "the Slack app's token belongs to a deactivated account; reinstall the app",
    "channel_not_found": "SLACK_CHANNEL names no channel the bot can see; check it, and invite the bot to it",
    "not_in_channel": "the bot is not in SLACK_CHANNEL; invite it (/invite @<bot>)",
    "ratelimited": "Slack is rate-limiting this app",
}


class _BriefRateLimitRetry(RateLimitErrorRetryHandler):
    """Waits out a 429 only when Slack asks for a few seconds; a longer wait is left to a later evaluation."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = next((v[0] for k, v in response.headers.items() if k.lower() == "retry-after"), "1")
        return wait.isdigit() and int(wait) <= MAX_RETRY_AFTER_SECONDS


def retry_handlers() -> list[RetryHandler]:
    """Small, bounded retries of connection errors, short rate limits and HTTP 500/503."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=RETRIES),
        _BriefRateLimitRetry(max_retry_count=RETRIES),
        ServerErrorRetryHandler(max_retry_count=RETRIES),
    ]


class SlackPoster:
    """Posts messages to one Slack channel; a message Slack did not take is logged, never raised."""

    def __init__(self, token: str, channel: str, *, base_url: str | None = None):
        self._token = token
        self.channel = channel
        url = base_url.rstrip("/") + "/" if base_url else WebClient.BASE_URL  # slack-sdk needs the trailing /
        self.client = WebClient(token=token, base_url=url, timeout=TIMEOUT_SECONDS, retry_handlers=retry_handlers())

    def post(self, message: AlertMessage, log: logging.Logger) -> Delivery:
        """Post one message; whatever went wrong, it is tried again at a later evaluation."""
        sync = message.sync
        try:
            self.client.chat_postMessage(
                channel=self.channel, text=slack_text(message), unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = short_error(self._redact(str(data.get("error") or "no error code")), 200)
            hint = _HINTS.get(error, "see https://api.slack.com/methods/chat.postMessage#errors")
            status = "" if exc.response.status_code == 200 else f"HTTP {exc.response.status_code}, "
            log.warning(
                "Slack did not take the alert for sync %r (%s%s): %s. It will be posted at a later evaluation.",
                sync,
                status,
                error,
                hint,
            )
            return Delivery.LATER
        except Exception as exc:  # an unreachable Slack must never break the sensor
            log.warning(
                "Could not reach Slack to post the alert for sync %r (%s: %s); check SLACK_API_URL and the network. "
                "It will be posted at a later evaluation.",
                sync,
                type(exc).__name__,
                short_error(self._redact(str(exc)), 200),
            )
            return Delivery.LATER
        return Delivery.TAKEN

    def _redact(self, text: str) -> str:
        """The text with the token replaced; before it is cut (short_error), as a cut token is not found."""
        return text.replace(self._token, "[SLACK_BOT_TOKEN]") if self._token else text


def slack_text(message: AlertMessage) -> str:
    """The message in Slack's mrkdwn: an emoji, the sync in bold, the run as a link."""
    sync = f"Segment sync *{message.sync}* (model `{message.model}`)"
    link = f"<{message.run_url}|{message.run_id[:8]}>"
    if message.kind == "failing":
        error = _escape(message.error or "")
        lines = [f":red_circle: {sync} failed.", f"> {error}", f"So far: {counts_text(message)}."]
    elif message.kind == "recovered":
        lines = [f":large_green_circle: {sync} has recovered.", f"This run: {counts_text(message)}."]
    elif message.kind == "rejecting":
        keys = ", ".join(key_text(k) if k is None else f"`{_escape(k)}`" for k in message.sample_keys)
        lines = [
            f":warning: {sync} rejected {message.rejected} of the {message.attempted} rows it tried to send "
            f"({message.percent_rejected}), above its threshold of {message.threshold}.",
            f"Reasons, in a sample of {count_text(message.sample_size, 'row')}: "
            + "; ".join(f"{n} × {_escape(reason)}" for reason, n in message.reasons),
            f"Sample keys: {keys or 'none'}",
        ]
        if message.rejected_rows_file:
            lines.append(f"All rejected rows: `{message.rejected_rows_file}`")
    else:
        return (
            f":white_check_mark: {sync} is back within its rejected-rows threshold of {message.threshold}: "
            f"{message.rejected} of {message.attempted} rows rejected. Run: {link}"
        )
    return "\n".join([*lines, f"Run: {link}"])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
