"""Webhook subscription and delivery schemas. `secret_key` is write-only: no output type has it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from app.errors import NO_NUL
from app.outbox import EVENTS

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

WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s@/?#]+([/?#][^\s]*)?$",
        description="http(s) URL without credentials; its host is vetted at delivery time",
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
        pattern=NO_NUL,
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
