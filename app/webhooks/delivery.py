"""Delivery attempts in batches: claim the due rows, POST them signed, record the outcomes.

One `deliver_webhook` message carries up to BATCH_SIZE delivery ids (the fan-out and the retry
sweep chunk them). The `webhook_deliveries` row is the source of truth (no tasks row per
delivery):

* claim (one statement for the batch): each delivery must be `pending` and due, and its
  webhook active (a `ping` goes out regardless); rows another worker holds are skipped (SKIP
  LOCKED). Their `next_attempt_at` is pushed past the slowest request's deadline, a lease, so
  a duplicate message, another replica or the retry sweep arriving meanwhile finds them "not
  due" and leaves them alone. A `success` or `failed` row is never sent again by a redelivered
  message.
* send: the batch's requests run concurrently, each within its subscription's timeout, over
  pooled keep-alive connections (one pool per host and event loop); each host is resolved and
  checked once per batch. No database connection or lock is held meanwhile.
* record (one short transaction for the batch): lock the subscriptions, then the deliveries
  (the order in which a cascading DELETE of a subscription takes them, so the two never
  deadlock), add one attempt row per attempt, update each failure streak in the order the
  attempts finished (deactivating at WEBHOOK_FAILURE_LIMIT), finish each delivery or set its
  next attempt with exponential backoff and jitter, and queue the retry messages, delayed,
  through the outbox: set-based statements over arrays, whatever the batch size.

A worker killed mid-batch leaves the lease to expire; `retry_failed_webhooks` then sends those
deliveries again: delivery is at-least-once and `webhook-id` lets the receiver deduplicate.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import certifi
import msgspec
import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from app.config import VERSION, get_settings
from app.db import transaction
from app.outbox import TOPIC_TASK, actor_message
from app.webhooks.schemas import MAX_TIMEOUT_SECONDS, PING_EVENT
from app.webhooks.signing import signature_headers
from app.webhooks.ssrf import DeliveryRefused, resolve_public_address

log = structlog.get_logger(__name__)

USER_AGENT = f"ProductionControl-Webhooks/{VERSION}"
RESPONSE_BODY_LIMIT = 2048  # bytes of the receiver's answer kept in the log
LEASE_MARGIN_SECONDS = 30.0  # beyond the request deadline, for the record transaction
# A delayed message may be released a little before next_attempt_at (clocks, rounding).
DUE_TOLERANCE_SECONDS = 2.0
DELIVER_ACTOR = "deliver_webhook"
# Deliveries per deliver_webhook message: a burst costs one claim, one record and one
# broker message per BATCH_SIZE deliveries; a batch's requests run concurrently, so a worker
# process has at most WORKER_CONCURRENCY_WEBHOOKS x BATCH_SIZE requests in flight.
BATCH_SIZE = 16


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


def _tls_context() -> ssl.SSLContext:
    # certifi's roots, as the HTTP clients elsewhere in the project use.
    return ssl.create_default_context(cafile=certifi.where())


class _ClientPool:
    """Pooled HTTP sessions of one event loop, one per (scheme, hostname).

    Requests go to the vetted IP address, so connections are keyed by IP; a shared pool
    could hand a TLS connection verified for one hostname to another hostname on the same IP.
    aiohttp rather than httpx: its pool costs ~0.2 ms of CPU a request at any concurrency,
    httpcore's grew to several ms with a batch's connections open to one host.
    """

    SIZE = 128

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        # Evicted sessions by the task that closes each later.
        self._closing: dict[asyncio.Task[None], aiohttp.ClientSession] = {}
        self._tls = _tls_context()

    def get(self, key: str) -> aiohttp.ClientSession:
        session = self._sessions.pop(key, None)
        if session is None:
            session = aiohttp.ClientSession(
                # No cap on connections: in-flight requests are bounded by threads x
                # BATCH_SIZE, and a request queued for a pooled connection would spend its
                # timeout, and its lease, waiting. Idle ones are kept for the next batch.
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=self._tls),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,  # an env proxy would bypass the address check
                timeout=aiohttp.ClientTimeout(total=None),  # send() bounds the whole attempt
                auto_decompress=False,  # the log keeps the first bytes as sent
            )
        self._sessions[key] = session
        while len(self._sessions) > self.SIZE:
            _, evicted = self._sessions.popitem(last=False)
            closing = asyncio.get_running_loop().create_task(self._close_later(evicted))
            self._closing[closing] = evicted
            closing.add_done_callback(self._forget)
        return session

    def _forget(self, closing: asyncio.Task[None]) -> None:
        self._closing.pop(closing, None)

    @staticmethod
    async def _close_later(session: aiohttp.ClientSession) -> None:
        # A request may still be using the evicted session: close it after the longest deadline.
        await asyncio.sleep(MAX_TIMEOUT_SECONDS)
        await session.close()

    async def close(self) -> int:
        """Close every session, the evicted ones too, and wait until they are closed; returns
        how many. For when the loop's deliveries are over: a request still running fails.
        """
        closing = list(self._closing)
        sessions = [*self._sessions.values(), *self._closing.values()]
        self._sessions.clear()
        # Closed here rather than by their tasks: a task cancelled before it started never
        # runs. Closing a session twice (its task was already closing it) is harmless.
        for task in closing:
            task.cancel()
        await asyncio.gather(
            *(session.close() for session in sessions), *closing, return_exceptions=True
        )
        return len(sessions)


_pools: dict[asyncio.AbstractEventLoop, _ClientPool] = {}


def _session_for(url: URL) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    if loop not in _pools:
        for stale in [other for other in _pools if other.is_closed()]:
            del _pools[stale]
        _pools[loop] = _ClientPool()
    return _pools[loop].get(f"{url.scheme}://{url.raw_host}")


async def close_client_sessions() -> int:
    """Close the pooled sessions of the running loop; call it before the loop ends.

    A session belongs to the loop it was made on and can only be closed there, so each loop
    closes its own: the worker's at shutdown (app.broker), a test's at its teardown. Unclosed,
    they leave "Unclosed client session" behind and their connections are never shut down
    cleanly. Returns how many sessions were closed; a later delivery starts a new pool.
    """
    pool = _pools.pop(asyncio.get_running_loop(), None)
    return 0 if pool is None else await pool.close()


class Resolver:
    """The SSRF-checked address of each host, looked up once per batch (at delivery time).

    Every target of a batch on one host waits for the same lookup; a target's timeout stops
    its own wait, never the lookup the others share.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._lookups: dict[tuple[str, int], asyncio.Future[str]] = {}

    async def address(self, host: str, port: int) -> str:
        lookup = self._lookups.get((host, port))
        if lookup is None:
            lookup = asyncio.ensure_future(
                resolve_public_address(host, port, allow_private=self.allow_private)
            )
            # Retrieved here too, in case every waiter timed out first.
            lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._lookups[(host, port)] = lookup
        return await asyncio.shield(lookup)


async def _post(target: Target, body: bytes, resolver: Resolver) -> tuple[int, bytes]:
    """POST to the address the host resolves to now, after the SSRF check.

    Returns the status code and at most RESPONSE_BODY_LIMIT bytes of the answer.
    """
    url = URL(target.url)
    host = url.raw_host or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    address = await resolver.address(host, port)
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": target.event,
        "X-Webhook-Id": target.event_id,
        **signature_headers(target.secret_key, body, target.event_id, int(time.time())),
    }
    pinned, server_hostname = url, None
    if address != host:
        pinned = url.with_host(address)
        headers["Host"] = url.host_port_subcomponent or host
        if url.scheme == "https":
            server_hostname = host  # SNI, and the certificate is checked for it
    session = _session_for(url)
    async with session.post(
        pinned,
        data=body,
        headers=headers,
        allow_redirects=False,
        server_hostname=server_hostname,
    ) as response:
        kept = bytearray()
        while len(kept) < RESPONSE_BODY_LIMIT:
            chunk = await response.content.read(RESPONSE_BODY_LIMIT - len(kept))
            if not chunk:
                break
            kept += chunk
        return response.status, bytes(kept)


async def send(target: Target, resolver: Resolver) -> AttemptResult:
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
            status, content = await _post(target, body, resolver)
    except DeliveryRefused as exc:
        return result(False, f"Refused: {exc}", retryable=False)
    except TimeoutError:
        return result(False, f"Timed out after {target.timeout:g} s", retryable=True)
    except (aiohttp.ClientError, OSError) as exc:
        return result(False, f"{type(exc).__name__}: {exc or 'request failed'}", retryable=True)
    except Exception as exc:  # one odd target must not sink the batch's other outcomes
        log.exception("webhook request failed unexpectedly", delivery_id=target.delivery_id)
        return result(False, f"{type(exc).__name__}: {exc or 'request failed'}", retryable=True)
    text = content.decode("utf-8", "replace")
    if 200 <= status < 300:
        return result(True, None, retryable=False, status=status, text=text)
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += ": redirects are not followed"
    return result(False, error, retryable=True, status=status, text=text)


_INSERT_MESSAGES = text(
    "INSERT INTO outbox (topic, event_type, payload) "
    "SELECT :topic, :event_type, p FROM unnest(CAST(:payloads AS json[])) AS p"
)


async def enqueue_deliveries(
    session: AsyncSession, delivery_ids: Sequence[int], *, eta_ms: int | None = None
) -> None:
    """deliver_webhook messages, BATCH_SIZE ids each, through the outbox: published only if
    this transaction commits (and held by the broker until `eta_ms`, epoch ms, if given)."""
    ids = list(delivery_ids)
    if ids:
        payloads = [
            msgspec.json.encode(
                actor_message(DELIVER_ACTOR, ids[start : start + BATCH_SIZE], eta_ms=eta_ms)
            ).decode()
            for start in range(0, len(ids), BATCH_SIZE)
        ]
        await session.execute(
            _INSERT_MESSAGES,
            {"topic": TOPIC_TASK, "event_type": DELIVER_ACTOR, "payloads": payloads},
        )


# The batch's lease is the longest timeout among the claimed deliveries plus the margin: all
# its requests start together, and its outcomes are recorded together after the slowest.
_CLAIM = text(
    """
    WITH due AS (
        SELECT d.id, s.timeout
        FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
        WHERE d.id = ANY(CAST(:ids AS integer[]))
          AND d.status = 'pending'
          AND (d.next_attempt_at IS NULL
               OR d.next_attempt_at <= now() + make_interval(secs => :tolerance))
          AND (s.is_active OR d.event_type = :ping)
        ORDER BY d.id
        FOR UPDATE OF d SKIP LOCKED
    ), lease AS (
        SELECT max(timeout) + :margin AS seconds FROM due
    )
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => lease.seconds)
    FROM due, lease, webhook_subscriptions s
    WHERE d.id = due.id AND s.id = d.subscription_id
    RETURNING d.id, d.subscription_id, d.event_id, d.event_type, d.payload, d.attempts,
              s.url, s.secret_key, s.timeout
    """
).columns(payload=JSONB)


async def claim(delivery_ids: Sequence[int]) -> list[Target]:
    """Lease the due pending deliveries among `delivery_ids` for one attempt each."""
    async with transaction() as session:
        rows = (
            await session.execute(
                _CLAIM,
                {
                    "ids": list(delivery_ids),
                    "tolerance": DUE_TOLERANCE_SECONDS,
                    "ping": PING_EVENT,
                    "margin": LEASE_MARGIN_SECONDS,
                },
            )
        ).all()
    return [
        Target(
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
        for row in sorted(rows, key=lambda row: row.id)
    ]


# Rows locked in id order: two messages with overlapping ids never deadlock.
_END_INACTIVE = text(
    """
    WITH doomed AS (
        SELECT d.id, s.id AS webhook_id, s.disabled_reason
        FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
        WHERE d.id = ANY(CAST(:ids AS integer[]))
          AND d.status = 'pending' AND NOT s.is_active AND d.event_type <> :ping
        ORDER BY d.id
        FOR NO KEY UPDATE OF d
    )
    UPDATE webhook_deliveries d
    SET status = 'failed', next_attempt_at = NULL,
        error_message = 'Not sent: webhook ' || doomed.webhook_id || ' is inactive'
                        || coalesce(' (' || doomed.disabled_reason || ')', '')
    FROM doomed
    WHERE d.id = doomed.id
    RETURNING d.id
    """
)


async def _not_claimed(delivery_ids: list[int]) -> None:
    """End the pending deliveries of inactive webhooks among ids the claim passed over; the
    others are finished, gone (webhook deleted), leased or backing off: nothing to do."""
    async with transaction() as session:
        ended = (
            (await session.execute(_END_INACTIVE, {"ids": delivery_ids, "ping": PING_EVENT}))
            .scalars()
            .all()
        )
    log.info(
        "deliveries not claimed (finished, gone, leased or backing off); messages skipped",
        delivery_ids=delivery_ids[:BATCH_SIZE],
        ended_inactive=list(ended),
    )


# Subscriptions with a failure in the batch are locked to change their streak (FOR NO KEY
# UPDATE, in id order: two batches never deadlock); the others only share the lock (FOR KEY
# SHARE, which never conflicts with the former), so successes of one webhook never queue.
_LOCK_SUBSCRIPTIONS = text(
    """
    WITH failing AS (
        SELECT id, is_active, failure_streak, retry_count FROM webhook_subscriptions
        WHERE id = ANY(CAST(:failing AS integer[])) ORDER BY id FOR NO KEY UPDATE
    ), succeeding AS (
        SELECT id, is_active, failure_streak, retry_count FROM webhook_subscriptions
        WHERE id = ANY(CAST(:succeeding AS integer[])) ORDER BY id FOR KEY SHARE
    )
    SELECT * FROM failing UNION ALL SELECT * FROM succeeding
    """
)
# Fenced on the attempt count read at claim time: only the holder of the lease writes.
_LOCK_DELIVERIES = text(
    """
    SELECT d.id FROM webhook_deliveries d
    JOIN unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS c(id, attempts)
      ON d.id = c.id AND d.attempts = c.attempts
    ORDER BY d.id
    FOR NO KEY UPDATE OF d
    """
)
_RECORD = text(
    """
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:attempt AS integer[]), CAST(:ok AS boolean[]),
            CAST(:status AS text[]), CAST(:response_status AS integer[]),
            CAST(:response_body AS text[]), CAST(:error AS text[]),
            CAST(:duration_ms AS double precision[]), CAST(:retry_in AS double precision[])
        ) AS r(id, attempt, ok, status, response_status, response_body, error, duration_ms,
               retry_in)
    ), updated AS (
        UPDATE webhook_deliveries d
        SET attempts = r.attempt, status = r.status, response_status = r.response_status,
            response_body = r.response_body, error_message = r.error,
            delivered_at = CASE WHEN r.ok THEN now() ELSE d.delivered_at END,
            next_attempt_at = now() + make_interval(secs => r.retry_in)
        FROM r WHERE d.id = r.id
    )
    INSERT INTO webhook_attempts
        (delivery_id, attempt, status, response_status, response_body, error_message,
         duration_ms)
    SELECT id, attempt, CASE WHEN ok THEN 'success' ELSE 'failed' END, response_status,
           response_body, error, duration_ms
    FROM r
    """
)
# A delivery outcome is not an edit of the subscription: updated_at moves only when it is
# deactivated.
_UPDATE_SUBSCRIPTIONS = text(
    """
    UPDATE webhook_subscriptions s
    SET failure_streak = c.streak,
        is_active = s.is_active AND NOT c.deactivate,
        disabled_reason = CASE WHEN c.deactivate THEN c.reason ELSE s.disabled_reason END,
        updated_at = CASE WHEN c.deactivate THEN now() ELSE s.updated_at END
    FROM unnest(CAST(:ids AS integer[]), CAST(:streak AS integer[]),
                CAST(:deactivate AS boolean[]), CAST(:reason AS text[]))
         AS c(id, streak, deactivate, reason)
    WHERE s.id = c.id
    """
)


@dataclass
class _Streak:
    """A subscription's state while the batch's outcomes are applied in order."""

    is_active: bool
    streak: int
    retry_count: int
    changed: bool = False
    deactivated_because: str | None = None


async def record(attempts: Sequence[tuple[Target, AttemptResult]]) -> dict[int, Outcome]:
    """Store the batch's attempts and decide what happens next, in one transaction.

    `attempts` in the order they finished: a webhook's failure streak counts them so.
    """
    settings = get_settings()
    outcomes: dict[int, Outcome] = {}
    if not attempts:
        return outcomes
    failing = {target.subscription_id for target, result in attempts if not result.ok}
    succeeding = {target.subscription_id for target, _ in attempts} - failing
    async with transaction() as session:
        streaks = {
            row.id: _Streak(row.is_active, row.failure_streak, row.retry_count)
            for row in await session.execute(
                _LOCK_SUBSCRIPTIONS,
                {"failing": sorted(failing), "succeeding": sorted(succeeding)},
            )
        }
        held = set(
            (
                await session.execute(
                    _LOCK_DELIVERIES,
                    {
                        "ids": [target.delivery_id for target, _ in attempts],
                        "attempts": [target.attempts for target, _ in attempts],
                    },
                )
            ).scalars()
        )
        rows: list[tuple[Target, AttemptResult, Outcome]] = []
        for target, result in attempts:
            state = streaks.get(target.subscription_id)
            if state is None or target.delivery_id not in held:
                # Deleted with its webhook, or taken over after the lease ran out.
                log.info("delivery gone or taken over during the attempt; outcome dropped")
                outcomes[target.delivery_id] = Outcome("skipped")
                continue
            outcome = _apply(state, target, result, settings.webhook_failure_limit)
            outcomes[target.delivery_id] = outcome
            rows.append((target, result, outcome))
        if not rows:
            return outcomes
        await session.execute(
            _RECORD,
            {
                "ids": [t.delivery_id for t, _, _ in rows],
                "attempt": [t.attempts + 1 for t, _, _ in rows],
                "ok": [r.ok for _, r, _ in rows],
                "status": [o.status for _, _, o in rows],
                "response_status": [r.response_status for _, r, _ in rows],
                "response_body": [r.response_body for _, r, _ in rows],
                "error": [r.error for _, r, _ in rows],
                "duration_ms": [r.duration_ms for _, r, _ in rows],
                "retry_in": [o.retry_in for _, _, o in rows],
            },
        )
        changed = {sid: state for sid, state in streaks.items() if state.changed}
        if changed:
            await session.execute(
                _UPDATE_SUBSCRIPTIONS,
                {
                    "ids": list(changed),
                    "streak": [state.streak for state in changed.values()],
                    "deactivate": [
                        state.deactivated_because is not None for state in changed.values()
                    ],
                    "reason": [state.deactivated_because for state in changed.values()],
                },
            )
        await _queue_retries(session, rows)
    return outcomes


def _apply(state: _Streak, target: Target, result: AttemptResult, limit: int) -> Outcome:
    """One attempt's effect on its webhook's streak, and what becomes of the delivery."""
    if result.ok:
        if state.streak:
            state.streak, state.changed = 0, True
        return Outcome("success")
    state.streak += 1
    state.changed = True
    if state.is_active and state.streak >= limit:
        state.is_active = False
        state.deactivated_because = (
            f"Deactivated after {state.streak} consecutive failed delivery attempts; "
            f"last error: {result.error}"
        )
        log.warning("webhook deactivated", webhook_id=target.subscription_id)
    if result.retryable and state.is_active and target.attempts + 1 <= state.retry_count:
        return Outcome("pending", retry_in=retry_delay(target.attempts + 1))
    return Outcome("failed")


async def _queue_retries(
    session: AsyncSession, rows: Sequence[tuple[Target, AttemptResult, Outcome]]
) -> None:
    """Delayed deliver_webhook messages for the planned retries, in the record's transaction.

    Retries due within the same second share a message, released at the end of that second
    (the claim accepts a delivery up to DUE_TOLERANCE_SECONDS early, never needs it late).
    """
    by_second: dict[int, list[int]] = defaultdict(list)
    for target, _, outcome in rows:
        if outcome.retry_in is not None:
            by_second[math.ceil(outcome.retry_in)].append(target.delivery_id)
    now_ms = int(time.time() * 1000)
    for seconds, ids in sorted(by_second.items()):
        await enqueue_deliveries(session, ids, eta_ms=now_ms + seconds * 1000)


async def deliver_batch(
    delivery_ids: Sequence[int], *, allow_private: bool | None = None
) -> dict[int, Outcome]:
    """Make the attempts that are due among `delivery_ids` (the deliver_webhook actor)."""
    if allow_private is None:
        allow_private = get_settings().webhook_allow_private
    ids = list(dict.fromkeys(delivery_ids))
    outcomes = dict.fromkeys(ids, Outcome("skipped"))
    if not ids:
        return outcomes
    targets = await claim(ids)
    claimed = {target.delivery_id for target in targets}
    if len(claimed) < len(ids):
        await _not_claimed([i for i in ids if i not in claimed])
    if not targets:
        return outcomes
    resolver = Resolver(allow_private=allow_private)

    async def attempt(target: Target) -> tuple[Target, AttemptResult]:
        return target, await send(target, resolver)

    finished = [await done for done in asyncio.as_completed([attempt(t) for t in targets])]
    outcomes.update(await record(finished))
    for target, result in finished:
        outcome = outcomes[target.delivery_id]
        log.info(
            "webhook attempt",
            delivery_id=target.delivery_id,
            webhook_id=target.subscription_id,
            webhook_event=target.event,
            ok=result.ok,
            response_status=result.response_status,
            error=result.error,
            duration_ms=result.duration_ms,
            outcome=outcome.status,
            retry_in=outcome.retry_in,
        )
    return outcomes


async def deliver(delivery_id: int, *, allow_private: bool | None = None) -> Outcome:
    """Make the attempt that is due for one delivery, if any."""
    return (await deliver_batch([delivery_id], allow_private=allow_private))[delivery_id]
