"""One delivery attempt: claim the due row, POST it signed, record the outcome, plan a retry.

The `webhook_deliveries` row is the source of truth (no tasks row per delivery):

* claim (one conditional UPDATE): the delivery must be `pending` and due, and its webhook
  active (a `ping` goes out regardless); its `next_attempt_at` is pushed past the request's
  deadline, a lease, so a duplicate message or the retry sweep arriving meanwhile finds it
  "not due" and leaves it alone. A `success` or `failed` row is never sent again by a
  redelivered message.
* send: no database connection or lock is held during the HTTP request.
* record (short transaction): lock the subscription, then the delivery (the order in which a
  cascading DELETE of the subscription takes them, so the two never deadlock), add the
  attempt row, update the failure streak (deactivating at WEBHOOK_FAILURE_LIMIT), and either
  finish the delivery or set its next attempt with exponential backoff and jitter.

A worker killed mid-request leaves the lease to expire; `retry_failed_webhooks` then sends the
delivery again: delivery is at-least-once and `webhook-id` lets the receiver deduplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import msgspec
import structlog
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import VERSION, get_settings
from app.db import transaction
from app.models import WebhookAttempt
from app.models import WebhookDelivery as D
from app.models import WebhookSubscription as S
from app.webhooks.schemas import MAX_TIMEOUT_SECONDS, PING_EVENT
from app.webhooks.signing import signature_headers
from app.webhooks.ssrf import DeliveryRefused, resolve_public_address

log = structlog.get_logger(__name__)

USER_AGENT = f"ProductionControl-Webhooks/{VERSION}"
RESPONSE_BODY_LIMIT = 2048  # bytes of the receiver's answer kept in the log
LEASE_MARGIN_SECONDS = 30.0  # beyond the request deadline, for the record transaction
# A delayed message may be released a little before next_attempt_at (clocks, rounding).
DUE_TOLERANCE = dt.timedelta(seconds=2)


@dataclass(frozen=True)
class Target:
    """What one attempt needs, read at claim time."""

    delivery_id: int
    subscription_id: int
    event_id: str
    event: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one
    url: str
    secret_key: str
    timeout: float


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    response_status: int | None
    response_body: str | None
    error: str | None
    duration_ms: float
    retryable: bool


@dataclass(frozen=True)
class Outcome:
    status: Literal["success", "failed", "pending", "skipped"]
    retry_in: float | None = None  # seconds until the next attempt, when one is planned


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, equal jitter."""
    settings = get_settings()
    nominal = min(
        settings.webhook_retry_max_seconds,
        settings.webhook_retry_base_seconds * 2 ** (attempt - 1),
    )
    return nominal / 2 + random.uniform(0, nominal / 2)


def encode_body(payload: dict[str, Any]) -> bytes:
    """The request body; keys in the documented order (JSONB does not keep it)."""
    return msgspec.json.encode(
        {
            "id": payload["id"],
            "event": payload["event"],
            "created_at": payload["created_at"],
            "data": payload["data"],
        }
    )


class _ClientPool:
    """Pooled HTTP clients of one event loop, one per (scheme, hostname).

    Requests go to the vetted IP address, so connection pools are keyed by IP; a shared pool
    could hand a TLS connection verified for one hostname to another hostname on the same IP.
    """

    SIZE = 128

    def __init__(self) -> None:
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, key: str) -> httpx.AsyncClient:
        client = self._clients.pop(key, None)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # an env proxy would bypass the address check
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
                headers={"User-Agent": USER_AGENT},
            )
        self._clients[key] = client
        while len(self._clients) > self.SIZE:
            _, evicted = self._clients.popitem(last=False)
            closing = asyncio.get_running_loop().create_task(self._close_later(evicted))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return client

    @staticmethod
    async def _close_later(client: httpx.AsyncClient) -> None:
        # A request may still be using the evicted client: close it after the longest deadline.
        await asyncio.sleep(MAX_TIMEOUT_SECONDS)
        await client.aclose()


_pools: dict[asyncio.AbstractEventLoop, _ClientPool] = {}


def _client_for(url: httpx.URL) -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    if loop not in _pools:
        for stale in [other for other in _pools if other.is_closed()]:
            del _pools[stale]
        _pools[loop] = _ClientPool()
    return _pools[loop].get(f"{url.scheme}://{url.host}")


async def _post(target: Target, body: bytes, *, allow_private: bool) -> tuple[int, bytes]:
    """POST to the address the host resolves to now, after the SSRF check.

    Returns the status code and at most RESPONSE_BODY_LIMIT bytes of the answer.
    """
    url = httpx.URL(target.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    address = await resolve_public_address(url.host, port, allow_private=allow_private)
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": target.event,
        "X-Webhook-Id": target.event_id,
        **signature_headers(target.secret_key, body, target.event_id, int(time.time())),
    }
    extensions: dict[str, Any] = {}
    pinned = url
    if address != url.host:
        pinned = url.copy_with(host=address)
        headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host  # and the certificate is checked for it
    client = _client_for(url)
    request = client.build_request(
        "POST", pinned, content=body, headers=headers, timeout=target.timeout, extensions=extensions
    )
    response = await client.send(request, stream=True)
    kept = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            kept += chunk
            if len(kept) >= RESPONSE_BODY_LIMIT:
                break
    finally:
        await response.aclose()
    return response.status_code, bytes(kept[:RESPONSE_BODY_LIMIT])


async def send(target: Target, *, allow_private: bool) -> AttemptResult:
    """One HTTP attempt within the subscription's timeout (DNS, connect, send and read)."""
    body = encode_body(target.payload)
    started = time.monotonic()

    def result(
        ok: bool,
        error: str | None,
        *,
        retryable: bool,
        status: int | None = None,
        text: str | None = None,
    ) -> AttemptResult:
        return AttemptResult(
            ok=ok,
            response_status=status,
            response_body=text,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            retryable=retryable,
        )

    try:
        async with asyncio.timeout(target.timeout):
            status, content = await _post(target, body, allow_private=allow_private)
    except DeliveryRefused as exc:
        return result(False, f"Refused: {exc}", retryable=False)
    except (TimeoutError, httpx.TimeoutException):
        return result(False, f"Timed out after {target.timeout:g} s", retryable=True)
    except (httpx.HTTPError, OSError) as exc:
        return result(False, f"{type(exc).__name__}: {exc or 'request failed'}", retryable=True)
    text = content.decode("utf-8", "replace")
    if 200 <= status < 300:
        return result(True, None, retryable=False, status=status, text=text)
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += ": redirects are not followed"
    return result(False, error, retryable=True, status=status, text=text)


async def claim(delivery_id: int) -> Target | None:
    """Lease a due pending delivery for one attempt; None when there is nothing to send."""
    lease = func.make_interval(0, 0, 0, 0, 0, 0, S.timeout + LEASE_MARGIN_SECONDS)
    async with transaction() as session:
        row = (
            await session.execute(
                update(D)
                .where(
                    D.id == delivery_id,
                    D.subscription_id == S.id,
                    D.status == "pending",
                    or_(
                        D.next_attempt_at.is_(None),
                        D.next_attempt_at <= func.now() + DUE_TOLERANCE,
                    ),
                    or_(S.is_active, D.event_type == PING_EVENT),
                )
                .values(next_attempt_at=func.now() + lease)
                .returning(
                    D.id,
                    D.subscription_id,
                    D.event_id,
                    D.event_type,
                    D.payload,
                    D.attempts,
                    S.url,
                    S.secret_key,
                    S.timeout,
                )
            )
        ).first()
        if row is None:
            await _not_claimed(session, delivery_id)
            return None
    return Target(
        delivery_id=row.id,
        subscription_id=row.subscription_id,
        event_id=str(row.event_id),
        event=row.event_type,
        payload=row.payload,
        attempts=row.attempts,
        url=row.url,
        secret_key=row.secret_key,
        timeout=row.timeout,
    )


async def _not_claimed(session: AsyncSession, delivery_id: int) -> None:
    """Say why a message found nothing to send; end an inactive webhook's pending delivery."""
    row = (
        await session.execute(
            select(D.status, D.event_type, S.id, S.is_active, S.disabled_reason)
            .join(S, S.id == D.subscription_id)
            .where(D.id == delivery_id)
            .with_for_update(of=D)
        )
    ).first()
    if row is None:
        log.info("delivery gone (webhook deleted); message dropped")
    elif row.status != "pending":
        log.info("delivery already finished; message skipped", status=row.status)
    elif not row.is_active and row.event_type != PING_EVENT:
        reason = f" ({row.disabled_reason})" if row.disabled_reason else ""
        await session.execute(
            update(D)
            .where(D.id == delivery_id)
            .values(
                status="failed",
                next_attempt_at=None,
                error_message=f"Not sent: webhook {row.id} is inactive{reason}",
            )
        )
        log.info("delivery not sent: webhook inactive")
    else:
        log.info("delivery not due (leased or backing off); message skipped")


async def record(target: Target, result: AttemptResult) -> Outcome:
    """Store the attempt and decide what happens next, in one transaction."""
    settings = get_settings()
    attempt = target.attempts + 1
    async with transaction() as session:
        # Lock order: subscription, then delivery, as a cascading DELETE takes them. A success
        # only shares the lock (FOR KEY SHARE), so successes of one webhook never queue; a
        # failure changes the streak (FOR NO KEY UPDATE), one at a time.
        subscription = (
            await session.execute(
                select(S.is_active, S.failure_streak, S.retry_count)
                .where(S.id == target.subscription_id)
                .with_for_update(read=result.ok, key_share=True)
            )
        ).first()
        if subscription is None:
            log.info("webhook deleted during the attempt; outcome dropped")
            return Outcome("skipped")
        changes: dict[str, Any] = {}
        is_active = subscription.is_active
        if result.ok:
            outcome = Outcome("success")
            if subscription.failure_streak:
                changes["failure_streak"] = 0
        else:
            streak = subscription.failure_streak + 1
            changes["failure_streak"] = streak
            if is_active and streak >= settings.webhook_failure_limit:
                is_active = False
                changes.update(
                    is_active=False,
                    updated_at=func.now(),
                    disabled_reason=(
                        f"Deactivated after {streak} consecutive failed delivery attempts; "
                        f"last error: {result.error}"
                    ),
                )
                log.warning("webhook deactivated", webhook_id=target.subscription_id)
            if result.retryable and is_active and attempt <= subscription.retry_count:
                outcome = Outcome("pending", retry_in=retry_delay(attempt))
            else:
                outcome = Outcome("failed")
        # Fenced on the attempt count read at claim time: only the holder of the lease writes.
        updated = (
            await session.execute(
                update(D)
                .where(D.id == target.delivery_id, D.attempts == target.attempts)
                .values(
                    attempts=attempt,
                    status=outcome.status,
                    response_status=result.response_status,
                    response_body=result.response_body,
                    error_message=result.error,
                    delivered_at=func.now() if result.ok else D.delivered_at,
                    next_attempt_at=(
                        func.now() + dt.timedelta(seconds=outcome.retry_in)
                        if outcome.retry_in is not None
                        else None
                    ),
                )
                .returning(D.id)
            )
        ).first()
        if updated is None:
            log.info("delivery deleted or taken over during the attempt; outcome dropped")
            return Outcome("skipped")
        await session.execute(
            insert(WebhookAttempt).values(
                delivery_id=target.delivery_id,
                attempt=attempt,
                status="success" if result.ok else "failed",
                response_status=result.response_status,
                response_body=result.response_body,
                error_message=result.error,
                duration_ms=result.duration_ms,
            )
        )
        if changes:
            # A delivery outcome is not an edit of the subscription: updated_at stays.
            changes.setdefault("updated_at", S.updated_at)
            await session.execute(update(S).where(S.id == target.subscription_id).values(**changes))
        return outcome


async def deliver(delivery_id: int, *, allow_private: bool | None = None) -> Outcome:
    """Make the attempt that is due for `delivery_id`, if any (the deliver_webhook actor)."""
    if allow_private is None:
        allow_private = get_settings().webhook_allow_private
    structlog.contextvars.bind_contextvars(delivery_id=delivery_id)
    try:
        target = await claim(delivery_id)
        if target is None:
            return Outcome("skipped")
        result = await send(target, allow_private=allow_private)
        outcome = await record(target, result)
        log.info(
            "webhook attempt",
            webhook_id=target.subscription_id,
            webhook_event=target.event,
            ok=result.ok,
            response_status=result.response_status,
            error=result.error,
            duration_ms=result.duration_ms,
            outcome=outcome.status,
            retry_in=outcome.retry_in,
        )
        return outcome
    finally:
        structlog.contextvars.unbind_contextvars("delivery_id")
