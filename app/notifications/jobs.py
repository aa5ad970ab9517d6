"""send_notification as a job: SMTP (aiosmtplib) when SMTP_HOST is set, a log line otherwise."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
import structlog

from app.config import Settings, get_settings
from app.notifications.schemas import Notification, NotificationResult

log = structlog.get_logger(__name__)

SMTPS_PORT = 465


class NotificationRejected(Exception):
    """The mail server refused the message for good (5xx): retrying would not help."""


def build_message(notification: Notification, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notification.to
    message["Subject"] = notification.subject
    message.set_content(notification.body)
    return message


async def deliver(
    notification: Notification, settings: Settings | None = None
) -> NotificationResult:
    settings = settings or get_settings()
    if not settings.smtp_host:
        log.info(
            "notification logged (SMTP_HOST not set)",
            to=notification.to,
            subject=notification.subject,
            body=notification.body,
        )
        return NotificationResult(to=notification.to, transport="log", delivered=False)
    implicit_tls = settings.smtp_port == SMTPS_PORT
    try:
        await aiosmtplib.send(
            build_message(notification, settings.smtp_from),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user or None,
            password=settings.smtp_password or None,
            use_tls=implicit_tls,
            start_tls=settings.smtp_tls and not implicit_tls,
            timeout=30,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise NotificationRejected(f"The mail server refused {notification.to}: {exc}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code >= 500:
            raise NotificationRejected(f"The mail server refused the message: {exc}") from exc
        raise ConnectionError(f"The mail server deferred the message: {exc}") from exc
    log.info("notification sent", to=notification.to, subject=notification.subject)
    return NotificationResult(to=notification.to, transport="smtp", delivered=True)
