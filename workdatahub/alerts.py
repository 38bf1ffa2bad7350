"""Tell people when a month did not load or a check failed.

Delivered to a Slack-compatible webhook (`{"text": ...}`) and/or by email (SMTP), as
configured by WDH_ALERT_WEBHOOK_URL / WDH_SMTP_*; with neither configured the alert is
logged. Delivery failures are logged, never raised: an alert must not fail a run.
"""

from __future__ import annotations

import json
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

from workdatahub.logs import get_logger
from workdatahub.settings import Settings, get_settings, mask_url

TIMEOUT_S = 10


@dataclass(frozen=True)
class Alert:
    what: str  # "run failed", "check reject_rate failed" …
    domain: str | None
    month: str | None
    detail: str
    run_id: str | None = None

    def link(self, settings: Settings) -> str | None:
        if not self.run_id:
            return None
        return f"{settings.ui_url.rstrip('/')}/runs/{self.run_id}"

    def subject(self) -> str:
        scope = " ".join(p for p in (self.domain, self.month) if p) or "WorkDataHub"
        return f"[WorkDataHub] {scope}: {self.what}"

    def text(self, settings: Settings) -> str:
        lines = [self.subject(), mask_url(self.detail)]
        link = self.link(settings)
        if link:
            lines.append(f"run: {link}")
        return "\n".join(lines)


def send_alert(alert: Alert, settings: Settings | None = None) -> list[str]:
    """Deliver an alert everywhere configured; return the channels it reached."""
    settings = settings or get_settings()
    log = get_logger(domain=alert.domain, partition=alert.month, run_id=alert.run_id)
    reached: list[str] = []
    if settings.alert_webhook_url is not None:
        try:
            _post_webhook(settings.alert_webhook_url.get_secret_value(), alert, settings)
            reached.append("webhook")
        except Exception as error:  # delivery is best effort; the run's own status stands
            log.warning("alert webhook failed", error=mask_url(str(error)))
    if settings.smtp_host and settings.alert_email_to.strip():
        try:
            _send_email(alert, settings)
            reached.append("email")
        except Exception as error:
            log.warning("alert email failed", error=mask_url(str(error)))
    if not reached:
        log.warning(
            "alert", what=alert.what, detail=mask_url(alert.detail), link=alert.link(settings)
        )
    return reached


BLOCK_CHARS = 3000  # the most a Slack section block takes: a longer one fails the post


def _post_webhook(url: str, alert: Alert, settings: Settings) -> None:
    text = alert.text(settings)
    shown = text
    if len(shown) > BLOCK_CHARS:  # (the message's own text keeps it whole)
        link = alert.link(settings)
        tail = f"\n… cut{f': the run {link}' if link else ''}"
        shown = text[: BLOCK_CHARS - len(tail)] + tail
    payload = {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}],
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if response.status >= 300:
            raise RuntimeError(f"webhook answered {response.status}")


def _send_email(alert: Alert, settings: Settings) -> None:
    if not settings.smtp_host:  # `send_alert` only calls this with a host
        raise ValueError("WDH_SMTP_HOST is not set")
    message = EmailMessage()
    message["Subject"] = alert.subject()
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(a.strip() for a in settings.alert_email_to.split(",") if a.strip())
    message.set_content(alert.text(settings))
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_S) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user and settings.smtp_password is not None:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
