"""Email through SMTP (the standard library's smtplib): STARTTLS or TLS from the start, a login from the environment."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from segment_sync.alerts.messages import AlertMessage, short_error
from segment_sync.alerts.plain_text import text, title
from segment_sync.alerts.settings import EmailSettings
from segment_sync.alerts.status import Delivery

SUBJECT_CHARS = 200


def compose(message: AlertMessage, settings: EmailSettings) -> EmailMessage:
    """The email: the title as subject, the text as a plain-text body, the sync and the kind as headers."""
    email = EmailMessage()
    email["Subject"] = f"[segment-sync] {short_error(title(message), SUBJECT_CHARS)}"
    email["From"] = settings.from_address
    email["To"] = ", ".join(settings.to)
    email["Date"] = formatdate(message.finished_at, usegmt=True)
    email["Message-ID"] = make_msgid("segment-sync", domain=(settings.from_address or "").rpartition("@")[2] or None)
    email["X-Segment-Sync-Sync"] = message.sync  # for mail filters
    email["X-Segment-Sync-Kind"] = message.kind
    email.set_content(text(message))
    return email


class EmailPoster:
    """Sends a sync's messages to its recipients; never raises, never logs the login."""

    def __init__(self, settings: EmailSettings, username: str | None, password: str | None):
        self.settings = settings
        self._login = (username, password or "") if username else None
        self.server = f"{settings.host}:{settings.port}"

    def post(self, message: AlertMessage, log: logging.Logger) -> Delivery:
        """Send one email: taken when the server accepted it for at least one recipient."""
        sync = message.sync
        try:
            with self._connect() as smtp:
                if self._login:
                    smtp.login(*self._login)
                refused = smtp.send_message(compose(message, self.settings))
        except smtplib.SMTPAuthenticationError as exc:
            return self._later(
                log,
                sync,
                exc,
                f"it refused the login; check {self.settings.username_env} and {self.settings.password_env}",
            )
        except smtplib.SMTPNotSupportedError as exc:
            hint = "it offers no STARTTLS: set tls to ssl or none" if "STARTTLS" in str(exc) else "it offers no AUTH"
            return self._later(log, sync, exc, hint + " (or use another server)")
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            codes = [code for code, _ in exc.recipients.values()] if hasattr(exc, "recipients") else [exc.smtp_code]
            if all(code >= 500 for code in codes):
                log.error(
                    "The SMTP server %s refused the alert email for sync %r for good (%s). It is dropped, not retried; "
                    "the sync's next run sends it again if it still applies. Check from_address and to.",
                    self.server,
                    sync,
                    short_error(self._redact(str(exc)), 300),
                )
                return Delivery.REFUSED
            return self._later(log, sync, exc, "it deferred the email")
        except UnicodeEncodeError as exc:  # smtplib sends the login as ASCII
            hint = f"smtplib sends the login as ASCII: {self.settings.username_env} and {self.settings.password_env}"
            return self._later(log, sync, exc, hint + " must hold ASCII characters only")
        except (smtplib.SMTPException, OSError) as exc:  # refused connections, timeouts, TLS errors
            return self._later(log, sync, exc, "check host, port and tls, and the network")
        if refused:
            log.warning(
                "The SMTP server %s did not take the alert email for sync %r for %s; the others got it.",
                self.server,
                sync,
                ", ".join(sorted(refused)),
            )
        return Delivery.TAKEN

    @contextlib.contextmanager
    def _connect(self) -> Iterator[smtplib.SMTP]:
        s = self.settings
        assert s.host is not None  # settings.AlertSettings.channels checks it
        context = ssl.create_default_context()  # verifies the server; SSL_CERT_FILE adds a CA of your own
        if s.tls == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
        with smtp:
            if s.tls == "starttls":
                smtp.starttls(context=context)
            yield smtp

    def _later(self, log: logging.Logger, sync: str, exc: Exception, hint: str) -> Delivery:
        log.warning(
            "Could not send the alert email for sync %r through the SMTP server %s (%s: %s): %s. It will be sent at a "
            "later evaluation.",
            sync,
            self.server,
            type(exc).__name__,
            short_error(self._redact(str(exc)), 300),
            hint,
        )
        return Delivery.LATER

    def _redact(self, text: str) -> str:
        """The text with the secrets replaced; before it is cut (short_error), as a cut secret is not found."""
        names = (self.settings.username_env, self.settings.password_env)
        for secret, name in zip(self._login or ("", ""), names, strict=True):
            if len(secret) >= 4:  # shorter, it would mangle the text more than it hides
                text = text.replace(secret, f"[{name}]")
        return text
