"""Notification requests: an address, a subject and a message."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.errors import NO_NUL

# Deliberately simple: one @, no spaces, a dot in the domain; the SMTP server has the last word.
Email = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$",
        max_length=254,
        description="An email address",
        examples=["shift.lead@example.com"],
    ),
]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Message = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000, pattern=NO_NUL)]


class TestNotification(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email
    message: Message
    subject: Subject = "Production Control: test notification"


class Notification(msgspec.Struct, kw_only=True):
    """The params of a send_notification task."""

    to: str
    subject: str
    body: str


class NotificationResult(msgspec.Struct):
    to: str
    transport: str  # "smtp" or "log"
    delivered: bool
