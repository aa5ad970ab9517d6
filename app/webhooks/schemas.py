"""Webhook subscription and delivery schemas. `secret_key` is write-only: no output type has it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from app.errors import END, plain_pattern
from app.outbox import EVENTS
from app.schemas import NOT_BLANK

WebhookEvent = Literal[
    "batch_created",
    "batch_updated",
    "batch_closed",
    "product_aggregated",
    "report_generated",
    "import_completed",
]
assert set(get_args(WebhookEvent)) == set(EVENTS), "WebhookEvent must list app.outbox.EVENTS"

# The event POST /webhooks/{id}/test sends; never emitted by the domain, so not subscribable.
PING_EVENT = "ping"

DeliveryStatus = Literal["pending", "success", "failed"]

MIN_TIMEOUT_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = 60.0
MAX_RETRY_COUNT = 10

# The URL grammar, spelled so that a URL matching it is one the service accepts (the same
# pattern validates and is documented; ASCII classes, not \d or \s, whose meanings differ
# between Python and JSON Schema's ECMA-262): a DNS name (labels of 1..63 letters, digits and
# inner hyphens, the last one starting with a letter), a dotted IPv4 address or a bracketed IPv6
# address (RFC 3986), a port 1..65535, then a path, query or fragment without whitespace or
# control characters. No credentials: '@' is not a host character.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = rf"(?:{_LABEL}\.)*[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = (
    "(?:"
    + "|".join(  # RFC 3986 IPv6address: at most one "::" standing for 1+ groups
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_REST = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
URL_PATTERN = plain_pattern(
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_DNS_NAME}|{_IPV4}|\[{_IPV6}\])(?::{_PORT})?"
    rf"(?:[/?#]{_REST}*)?{END}",
    "must be an http:// or https:// URL: a host name, IPv4 or [IPv6] address, an optional "
    "port 1..65535, no credentials, no whitespace or control characters",
)
WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        pattern=URL_PATTERN,
        description=(
            "http(s) URL without credentials. Deployment policy: unless the service runs with "
            "WEBHOOK_ALLOW_PRIVATE=true, a literal loopback, private, link-local, metadata or "
            "otherwise non-public address is refused (422); a host name is resolved and its "
            "addresses vetted the same way at every delivery."
        ),
        examples=["https://erp.example.com/hooks/production"],
    ),
]
EventList = Annotated[
    list[WebhookEvent],
    msgspec.Meta(min_length=1, max_length=len(EVENTS), description="Events to receive"),
]
SecretKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=1024,
        extra_json_schema=NOT_BLANK,  # check_secret refuses a blank key
        description=(
            "HMAC key (write-only, never returned). `whsec_<base64>` keys are base64-decoded "
            "for the Standard Webhooks signature, as that spec's libraries expect."
        ),
    ),
]
RetryCount = Annotated[
    int,
    msgspec.Meta(ge=0, le=MAX_RETRY_COUNT, description="Retries after a failed first attempt"),
]
TimeoutSeconds = Annotated[
    float,
    msgspec.Meta(
        ge=MIN_TIMEOUT_SECONDS,
        le=MAX_TIMEOUT_SECONDS,
        description="Whole-request deadline per attempt, seconds",
    ),
]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: WebhookUrl
    events: EventList
    secret_key: SecretKey
    is_active: bool = True
    retry_count: RetryCount = 3
    timeout: TimeoutSeconds = 10.0


class WebhookUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Partial update; `secret_key` rotates the key, `is_active: true` clears a deactivation."""

    url: WebhookUrl | UnsetType = UNSET
    events: EventList | UnsetType = UNSET
    secret_key: SecretKey | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET
    retry_count: RetryCount | UnsetType = UNSET
    timeout: TimeoutSeconds | UnsetType = UNSET


class WebhookOut(msgspec.Struct, kw_only=True):
    id: int
    url: str
    events: list[str]
    is_active: bool
    retry_count: int
    timeout: float
    failure_streak: int  # failed attempts in a row; a success resets it
    disabled_reason: str | None  # why it was deactivated automatically, else null
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookList(msgspec.Struct):
    items: list[WebhookOut]
    total: int


class AttemptOut(msgspec.Struct, kw_only=True):
    attempt: int
    status: Literal["success", "failed"]
    response_status: int | None
    response_body: str | None
    error_message: str | None
    duration_ms: float
    created_at: dt.datetime


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: int
    webhook_id: int
    event_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime | None
    response_status: int | None
    response_body: str | None
    error_message: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]


class DeliveryList(msgspec.Struct):
    items: list[DeliveryOut]
    total: int
