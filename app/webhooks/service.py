"""Webhook rules: subscriptions, delivery log, redelivery, pings, fan-out, the retry sweep."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import Select, any_, delete, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.errors import BusinessRuleViolation, Conflict, InputInvalid, Loc, NotFound
from app.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.outbox import outbox_events
from app.webhooks.delivery import enqueue_deliveries
from app.webhooks.schemas import (
    PING_EVENT,
    AttemptOut,
    DeliveryList,
    DeliveryOut,
    WebhookCreate,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)
from app.webhooks.signing import STANDARD_SECRET_PREFIX, decode_standard_secret
from app.webhooks.ssrf import refusal_reason

T = TypeVar("T")

# The sweep leaves deliveries that only just fell due to the delayed message already on its way.
SWEEP_GRACE_SECONDS = 30
SWEEP_BATCH = 1000


# --- input checks (422 naming the field; nothing is written before they pass) ---------------


def check_url(url: str, loc: Loc) -> str:
    """An absolute http(s) URL with a host and no credentials (the address is checked later)."""
    if url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InputInvalid.at(loc, "must not contain whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise InputInvalid.at(loc, "must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise InputInvalid.at(loc, "must not contain credentials (user:password@)")
    if not parts.hostname:
        raise InputInvalid.at(loc, "must name a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed or out-of-range port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InputInvalid.at(loc, f"is not a valid URL: {exc}") from exc
    # Where private addresses are refused (production), a literal one is refused at once. With
    # WEBHOOK_ALLOW_PRIVATE=true every address the documented URL pattern admits is taken, and
    # delivery still refuses metadata, multicast and unspecified ones. A name is resolved (and
    # judged) at delivery time.
    if get_settings().webhook_allow_private:
        return url
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url
    if reason := refusal_reason(address, allow_private=False):
        raise InputInvalid.at(loc, f"must not point to {reason} ({address})", "url_refused")
    return url


def check_secret(secret: str, loc: Loc) -> str:
    if not secret.strip():
        raise InputInvalid.at(loc, "must not be blank", "string_blank")
    if secret.startswith(STANDARD_SECRET_PREFIX) and decode_standard_secret(secret) is None:
        raise InputInvalid.at(loc, f"a {STANDARD_SECRET_PREFIX} secret must be base64 after it")
    return secret


def unique_events(events: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(events))


# --- subscriptions ------------------------------------------------------------------------


def webhook_out(subscription: WebhookSubscription) -> WebhookOut:
    return msgspec.convert(subscription, WebhookOut, from_attributes=True)


async def create_webhook(session: AsyncSession, data: WebhookCreate) -> WebhookOut:
    subscription = WebhookSubscription(
        url=check_url(data.url, ["body", "url"]),
        events=unique_events(data.events),
        secret_key=check_secret(data.secret_key, ["body", "secret_key"]),
        is_active=data.is_active,
        retry_count=data.retry_count,
        timeout=float(data.timeout),
        failure_streak=0,
    )
    session.add(subscription)
    await session.flush()
    await session.refresh(subscription)
    return webhook_out(subscription)


async def _subscription(
    session: AsyncSession, webhook_id: int, *, lock: bool = False
) -> WebhookSubscription:
    query = select(WebhookSubscription).where(WebhookSubscription.id == webhook_id)
    if lock:
        query = query.with_for_update(key_share=True)
    subscription = (await session.execute(query)).scalar_one_or_none()
    if subscription is None:
        raise NotFound(f"Webhook not found (id {webhook_id})")
    return subscription


async def get_webhook(session: AsyncSession, webhook_id: int) -> WebhookOut:
    return webhook_out(await _subscription(session, webhook_id))


async def _page(
    session: AsyncSession, query: Select[T], offset: int, limit: int
) -> tuple[list[T], int]:
    """One page of `query` and the number of rows it matches."""
    total = (
        await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))
    ).scalar_one()
    rows = (await session.execute(query.offset(offset).limit(limit))).scalars().all()
    return list(rows), total


async def list_webhooks(
    session: AsyncSession,
    *,
    is_active: bool | None,
    event: str | None,
    offset: int,
    limit: int,
) -> WebhookList:
    conditions: list[Any] = []
    if is_active is not None:
        conditions.append(WebhookSubscription.is_active.is_(is_active))
    if event is not None:
        conditions.append(literal(event) == any_(WebhookSubscription.events))
    query = select(WebhookSubscription).where(*conditions).order_by(WebhookSubscription.id)
    subscriptions, total = await _page(session, query, offset, limit)
    items = msgspec.convert(subscriptions, list[WebhookOut], from_attributes=True)
    return WebhookList(items=items, total=total)


async def update_webhook(session: AsyncSession, webhook_id: int, data: WebhookUpdate) -> WebhookOut:
    changes: dict[str, Any] = {}
    if not isinstance(data.url, msgspec.UnsetType):
        changes["url"] = check_url(data.url, ["body", "url"])
    if not isinstance(data.events, msgspec.UnsetType):
        changes["events"] = unique_events(data.events)
    if not isinstance(data.secret_key, msgspec.UnsetType):
        changes["secret_key"] = check_secret(data.secret_key, ["body", "secret_key"])
    if not isinstance(data.retry_count, msgspec.UnsetType):
        changes["retry_count"] = data.retry_count
    if not isinstance(data.timeout, msgspec.UnsetType):
        changes["timeout"] = float(data.timeout)
    subscription = await _subscription(session, webhook_id, lock=True)
    if not isinstance(data.is_active, msgspec.UnsetType):
        if data.is_active and not subscription.is_active:
            # Re-enabling is the operator saying the receiver is fixed: a fresh streak.
            changes.update(failure_streak=0, disabled_reason=None)
        changes["is_active"] = data.is_active
    for name, value in changes.items():
        setattr(subscription, name, value)
    if changes:
        await session.flush()
        await session.refresh(subscription)
    return webhook_out(subscription)


async def delete_webhook(session: AsyncSession, webhook_id: int) -> None:
    """Delete the subscription with its whole delivery log (ON DELETE CASCADE).

    A delivery in flight finishes its request but its outcome is dropped; queued messages for
    the deleted deliveries find nothing and are skipped.
    """
    result = await session.execute(
        delete(WebhookSubscription)
        .where(WebhookSubscription.id == webhook_id)
        .returning(WebhookSubscription.id)
    )
    if result.first() is None:
        raise NotFound(f"Webhook not found (id {webhook_id})")


# --- deliveries ---------------------------------------------------------------------------


def delivery_out(delivery: WebhookDelivery, attempts: Sequence[WebhookAttempt]) -> DeliveryOut:
    # By hand: the API names the table's subscription_id and event_type webhook_id and event,
    # and shows the event id (a uuid) as a string; the attempt log's names match its table.
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.subscription_id,
        event_id=str(delivery.event_id),
        event=delivery.event_type,
        status=delivery.status,  # type: ignore[arg-type]  # constrained by the writers
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        response_status=delivery.response_status,
        response_body=delivery.response_body,
        error_message=delivery.error_message,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        payload=delivery.payload,
        attempt_log=msgspec.convert(attempts, list[AttemptOut], from_attributes=True),
    )


async def _with_attempts(
    session: AsyncSession, deliveries: Sequence[WebhookDelivery]
) -> list[DeliveryOut]:
    """Delivery objects with their attempt logs: one query for the whole page."""
    by_delivery: dict[int, list[WebhookAttempt]] = defaultdict(list)
    if deliveries:
        rows = await session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.id)
        )
        for attempt in rows.scalars():
            by_delivery[attempt.delivery_id].append(attempt)
    return [delivery_out(d, by_delivery[d.id]) for d in deliveries]


async def list_deliveries(
    session: AsyncSession,
    webhook_id: int,
    *,
    status: str | None,
    event: str | None,
    offset: int,
    limit: int,
) -> DeliveryList:
    await _subscription(session, webhook_id)
    conditions: list[Any] = [WebhookDelivery.subscription_id == webhook_id]
    if status is not None:
        conditions.append(WebhookDelivery.status == status)
    if event is not None:
        conditions.append(WebhookDelivery.event_type == event)
    query = select(WebhookDelivery).where(*conditions).order_by(WebhookDelivery.id.desc())
    deliveries, total = await _page(session, query, offset, limit)
    return DeliveryList(items=await _with_attempts(session, deliveries), total=total)


async def redeliver(session: AsyncSession, webhook_id: int, delivery_id: int) -> DeliveryOut:
    """Send a finished delivery again now: one new attempt, receivers dedupe by webhook-id.

    Automatic retries only cover the first 1 + retry_count attempts of a delivery, so a failed
    redelivery stays failed; a pending delivery already has its next attempt planned (409).
    """
    row = (
        await session.execute(
            select(WebhookDelivery, WebhookSubscription)
            .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == webhook_id)
            .with_for_update(of=WebhookDelivery)
        )
    ).first()
    if row is None:
        await _subscription(session, webhook_id)
        raise NotFound(f"Delivery not found (id {delivery_id}, webhook {webhook_id})")
    delivery, subscription = row
    if delivery.status == "pending":
        raise Conflict(
            f"Delivery {delivery_id} is still pending (next attempt at "
            f"{_iso(delivery.next_attempt_at)}); only a finished delivery can be redelivered"
        )
    if not subscription.is_active and delivery.event_type != PING_EVENT:
        reason = f": {subscription.disabled_reason}" if subscription.disabled_reason else ""
        raise BusinessRuleViolation(
            f"Webhook {webhook_id} is inactive{reason}; set is_active to true (PATCH) first"
        )
    delivery.status = "pending"
    delivery.next_attempt_at = func.now()
    await enqueue_deliveries(session, [delivery.id])
    await session.flush()
    await session.refresh(delivery)
    return (await _with_attempts(session, [delivery]))[0]


async def send_test(session: AsyncSession, webhook_id: int) -> DeliveryOut:
    """Queue a `ping` delivery (sent even to an inactive webhook, to check a fixed receiver)."""
    subscription = await _subscription(session, webhook_id)
    event_id = uuid.uuid4()
    delivery = WebhookDelivery(
        subscription_id=subscription.id,
        event_id=event_id,
        event_type=PING_EVENT,
        payload={
            "id": str(event_id),
            "event": PING_EVENT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "data": {"webhook_id": subscription.id, "message": "Test delivery"},
        },
        status="pending",
        attempts=0,
        next_attempt_at=func.now(),
    )
    session.add(delivery)
    await session.flush()
    await enqueue_deliveries(session, [delivery.id])
    await session.refresh(delivery)
    return delivery_out(delivery, [])


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else "unknown"


# --- fan-out (in the outbox relay) and the retry sweep (retry_failed_webhooks) --------------

# The events of the relay's rows (app.outbox.outbox_events), those with a subscriber only.
_FAN_OUT = text(
    f"""
    WITH events AS ({
        outbox_events(
            "o.id = ANY(CAST(:outbox_ids AS bigint[])) AND EXISTS ("
            " SELECT FROM webhook_subscriptions s"
            " WHERE s.is_active AND o.event_type = ANY(s.events))"
        )
    })
    INSERT INTO webhook_deliveries
        (subscription_id, event_id, event_type, payload, status, attempts, next_attempt_at)
    SELECT s.id, e.id, e.event,
           jsonb_build_object('id', e.id, 'event', e.event, 'created_at', e.created_at,
                              'data', e.data),
           'pending', 0, now()
    FROM events e
    JOIN webhook_subscriptions s ON s.is_active AND e.event = ANY(s.events)
    ORDER BY e.outbox_id, e.n, s.id
    ON CONFLICT ON CONSTRAINT uq_delivery_subscription_event DO NOTHING
    RETURNING id
    """
)


async def fan_out(session: AsyncSession, events: list[int]) -> None:
    """One delivery per (committed event, matching active subscription), set-based;
    `events` are the ids of outbox event rows.

    Runs in the relay's transaction, which holds the event rows locked; the
    deliver_webhook messages (BATCH_SIZE deliveries each) go through the outbox and are
    published on the relay's next round, after this commit (its NOTIFY wakes it at once).
    """
    if not events:
        return
    ids = (await session.execute(_FAN_OUT, {"outbox_ids": events})).scalars().all()
    await enqueue_deliveries(session, ids)


async def requeue_due_deliveries(session: AsyncSession) -> list[int]:
    """Re-send messages for pending deliveries overdue by SWEEP_GRACE_SECONDS (one batch).

    Their messages were lost (broker restart, worker killed mid-request after its lease
    expired). `next_attempt_at` becomes now(), so the message finds them due and the next
    batch does not pick them again; a message that was merely late is skipped by the claim.
    """
    due = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at
            <= func.now() - dt.timedelta(seconds=SWEEP_GRACE_SECONDS),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    ids = list(
        (
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(due))
                .values(next_attempt_at=func.now())
                .returning(WebhookDelivery.id)
            )
        ).scalars()
    )
    await enqueue_deliveries(session, ids)
    return ids
