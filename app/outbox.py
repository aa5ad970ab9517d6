"""Transactional outbox: writers and the relay.

Writers add rows in the caller's transaction (a task to run, or an event that happened);
an AFTER INSERT trigger NOTIFYs `outbox`, delivered only at commit. The relay (in every api
and scheduler process, built by app.wiring.outbox_relay with the same event handlers) wakes
on that NOTIFY, or on a periodic sweep, locks unpublished rows with SKIP LOCKED, handles
events, publishes messages and marks them published in the same transaction. A
crash between publish and commit re-publishes: delivery is at-least-once and actors are
idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import msgspec
import structlog
from sqlalchemy import case, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import transaction
from app.models import OutboxMessage, Task, TaskStatus
from app.tasks.kinds import PRIORITY_NORMAL, TASK_QUEUES

log = structlog.get_logger(__name__)

TOPIC_TASK = "task"
TOPIC_EVENT = "event"

EVENTS = (
    "batch_created",
    "batch_updated",
    "batch_closed",
    "product_aggregated",
    "report_generated",
    "import_completed",
)


def actor_message(
    actor: str,
    args: Sequence[Any],
    *,
    message_id: str | None = None,
    priority: int = PRIORITY_NORMAL,
    eta_ms: int | None = None,
) -> dict[str, Any]:
    """The outbox payload of one message for the actor `actor`; with `eta_ms` (epoch
    milliseconds) the broker holds it until then (a planned retry)."""
    payload = {
        "actor": actor,
        "queue": TASK_QUEUES[actor],
        "args": list(args),
        "message_id": message_id or str(uuid.uuid4()),
        "priority": priority,
    }
    if eta_ms is not None:
        payload["eta_ms"] = eta_ms
    return payload


async def enqueue_task(
    session: AsyncSession,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    priority: int = PRIORITY_NORMAL,
    total: int = 0,
    max_attempts: int = 4,
    idempotency_key: str | None = None,
) -> Task:
    """Create a task row and its outbox message in the caller's transaction."""
    task = Task(
        id=uuid.uuid4(),
        kind=kind,
        queue=TASK_QUEUES[kind],
        status=TaskStatus.PENDING,
        params=params or {},
        progress_total=total,
        progress_current=0,
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        idempotency_key=idempotency_key,
    )
    session.add(task)
    await session.flush()
    await send_task_messages(session, [(kind, task.id)], priority=priority)
    return task


async def send_task_messages(
    session: AsyncSession,
    tasks: Sequence[tuple[str, uuid.UUID]],
    *,
    priority: int = PRIORITY_NORMAL,
) -> None:
    """Queue the actor message of existing task rows; the task id doubles as message id."""
    if not tasks:
        return
    await session.execute(
        insert(OutboxMessage),
        [
            {
                "topic": TOPIC_TASK,
                "event_type": kind,
                "payload": actor_message(
                    kind, [str(task_id)], message_id=str(task_id), priority=priority
                ),
            }
            for kind, task_id in tasks
        ],
    )


async def send_actor_message(
    session: AsyncSession, actor: str, args: Sequence[Any], *, priority: int = PRIORITY_NORMAL
) -> None:
    """Queue a message for an actor that keeps its own state (no tasks row)."""
    await session.execute(
        insert(OutboxMessage).values(
            topic=TOPIC_TASK,
            event_type=actor,
            payload=actor_message(actor, args, priority=priority),
        )
    )


async def emit_events(session: AsyncSession, event: str, items: Sequence[Any]) -> None:
    """Record that `event` happened once per item, in the caller's transaction.

    One outbox row holds them all, `{"event", "created_at", "items": [data, ...]}`: a feed
    of 1,000 batches writes one row, not 1,000. `outbox_events` expands it for the webhook
    fan-out, each event with an id derived from the row and the item's place.
    Items are anything msgspec encodes (dicts, Structs).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if not items:
        return
    payload = msgspec.json.encode(
        {"event": event, "created_at": dt.datetime.now(dt.UTC).isoformat(), "items": items}
    ).decode()
    await session.execute(
        text(
            "INSERT INTO outbox (topic, event_type, payload) "
            "VALUES (:topic, :event, CAST(:payload AS json))"
        ),
        {"topic": TOPIC_EVENT, "event": event, "payload": payload},
    )


def outbox_events(where: str = "TRUE") -> str:
    """SQL for every event of the outbox rows matching `where` (on `o`), one row each:
    (outbox_id, n, id, event, created_at, data, published_at).

    A group's items get an id derived from their row and place, the same however often the
    row is read (the webhook fan-out, diagnostics); rows written before groups hold one
    event, {"id", "event", "created_at", "data"}, and keep their id. The payload is json
    (text): each `->` parses it, so a row's fields are taken once (OFFSET 0 keeps the
    planner from moving them into the per-item select), not once per item.
    """
    return f"""
    SELECT g.outbox_id, i.n,
           COALESCE(g.single_id, CAST(md5(g.outbox_id || '/' || i.n) AS uuid)) AS id,
           g.event, g.created_at, i.data, g.published_at
    FROM (
        SELECT o.id AS outbox_id, o.event_type AS event, o.published_at,
               CAST(o.payload ->> 'id' AS uuid) AS single_id,
               o.payload -> 'created_at' AS created_at,
               COALESCE(o.payload -> 'items', json_build_array(o.payload -> 'data')) AS items
        FROM outbox o
        WHERE o.topic = 'event' AND ({where})
        OFFSET 0
    ) g
    CROSS JOIN LATERAL json_array_elements(g.items) WITH ORDINALITY AS i(data, n)
    """


async def emit_event(session: AsyncSession, event: str, data: dict[str, Any]) -> None:
    await emit_events(session, event, [data])


# An event handler reacts to committed events (webhook fan-out) inside the relay's
# transaction, so what it writes commits together with the "published" mark. It gets the
# ids of the event rows (locked by the relay) and reads what it needs of them in SQL: the
# relay never decodes a group's items. Messages it wants sent go into the outbox too
# (send_actor_message): they are published on the next round, after this commit, so no
# worker can look for a row that is not committed yet.
EventHandler = Callable[[AsyncSession, list[int]], Awaitable[None]]


class Publisher:
    """Publishes actor messages to RabbitMQ from one dedicated thread (pika is not thread-safe)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-publisher")

    @staticmethod
    def _publish(messages: list[dict[str, Any]]) -> None:
        import dramatiq

        from app.broker import broker

        for payload in messages:
            # A message published late (relay down) is held only for what is left of its delay.
            delay = payload.get("eta_ms", 0) - int(time.time() * 1000)
            broker.enqueue(
                dramatiq.Message(
                    queue_name=payload["queue"],
                    actor_name=payload["actor"],
                    args=tuple(payload["args"]),
                    kwargs={},
                    options={"broker_priority": payload.get("priority", PRIORITY_NORMAL)},
                    message_id=payload["message_id"],
                ),
                delay=delay if delay > 0 else None,
            )

    async def publish(self, messages: list[dict[str, Any]]) -> None:
        if messages:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._publish, messages
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class OutboxRelay:
    BATCH = 500
    SWEEP_SECONDS = 2.0

    def __init__(
        self, event_handlers: Sequence[EventHandler], publisher: Publisher | None = None
    ) -> None:
        # No default: a relay built without the handlers would mark events published and
        # drop them (build it with app.wiring.outbox_relay()).
        self.event_handlers = tuple(event_handlers)
        self.publisher = publisher or Publisher()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(get_settings().sync_database_url)
            await self._listener.add_listener("outbox", lambda *_: self._wakeup.set())
        except (OSError, asyncpg.PostgresError) as exc:  # the sweep still runs without NOTIFY
            log.warning("outbox listener unavailable", error=str(exc))
            self._listener = None

    async def drain_once(self) -> int:
        """Publish up to one batch of unpublished rows; returns how many were handled."""
        async with transaction() as session:
            rows = (
                await session.execute(
                    select(
                        OutboxMessage.id,
                        OutboxMessage.topic,
                        # Only messages are read here; events are left to the handlers.
                        case((OutboxMessage.topic == TOPIC_TASK, OutboxMessage.payload)),
                    )
                    .where(OutboxMessage.published_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(self.BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            messages = [payload for _, topic, payload in rows if topic == TOPIC_TASK]
            events = [id_ for id_, topic, _ in rows if topic == TOPIC_EVENT]
            for handler in self.event_handlers:
                await handler(session, events)
            await self.publisher.publish(messages)
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_([id_ for id_, _, _ in rows]))
                .values(published_at=dt.datetime.now(dt.UTC))
            )
            return len(rows)

    async def drain(self) -> None:
        while await self.drain_once() == self.BATCH:
            pass

    async def run(self) -> None:
        await self._listen()
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                self._wakeup.clear()
                await self.drain()
                backoff = 0.5
            except Exception as exc:  # broker or database down: keep rows, retry later
                log.warning("outbox relay failed; will retry", error=repr(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.SWEEP_SECONDS)
            listener_lost = self._listener is None or self._listener.is_closed()
            if listener_lost and not self._stopping.is_set():
                await self._listen()

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self.publisher.close()
