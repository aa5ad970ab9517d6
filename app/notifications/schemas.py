"""Notification requests: an address, a subject and a message."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.errors import END, plain_pattern
from app.schemas import NOT_BLANK

# Deliberately simple: one @, a dot in the domain, no whitespace, control characters or the
# address syntax's specials (a line break does not fit in the To header, and Python's header
# parser fails on some quoted or bracketed forms); the SMTP server has the last word. Spelled
# as code points, not \s: JSON Schema's \s (ECMA-262) and Python's are different sets, and this
# one pattern both validates and is documented.
_ADDRESS_CHAR = (
    r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    r'()<>\[\]:;,\\"]'
)
EMAIL_PATTERN = plain_pattern(
    rf"^{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+{END}",
    "must be an email address: name@domain.tld without whitespace, control characters "
    'or ()<>[]:;,\\"',
)
Email = Annotated[
    str,
    msgspec.Meta(
        pattern=EMAIL_PATTERN,
        max_length=254,
        description="An email address",
        examples=["shift.lead@example.com"],
    ),
]
# Blank ones are refused by the controller; the document states both rules (app.schemas).
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=200, extra_json_schema=NOT_BLANK)]
Message = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000, extra_json_schema=NOT_BLANK)]


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
