"""deliver_webhook (one delivery attempt) and retry_failed_webhooks (the 15-minute sweep)."""

from __future__ import annotations

from typing import Any

import dramatiq

from app.broker import broker
from app.db import transaction
from app.tasks.context import TaskContext
from app.tasks.kinds import TASK_QUEUES
from app.webhooks.delivery import deliver
from app.webhooks.service import SWEEP_BATCH, requeue_due_deliveries
from workers.task_actor import is_retryable, task_actor

# Longest request (timeout <= 60 s) plus DNS and the two short transactions.
DELIVER_TIME_LIMIT_MS = 2 * 60 * 1000
MAX_TRANSIENT_RETRIES = 5


class ScheduledRetry(dramatiq.Retry):
    """The attempt failed and the delivery row has its next_attempt_at: come back then."""

    def __init__(self, delivery_id: int, delay_s: float) -> None:
        super().__init__(
            f"delivery {delivery_id} retries in {delay_s:.1f} s", delay=int(delay_s * 1000)
        )


def _retry_when(retries: int, exc: BaseException) -> bool:
    if isinstance(exc, ScheduledRetry):
        return True  # bounded by the subscription's retry_count, not by dramatiq's counter
    # Database briefly unavailable: the row is unchanged (or leased), so trying again is safe.
    return is_retryable(exc) and retries < MAX_TRANSIENT_RETRIES


@dramatiq.actor(
    broker=broker,
    actor_name="deliver_webhook",
    queue_name=TASK_QUEUES["deliver_webhook"],
    time_limit=DELIVER_TIME_LIMIT_MS,
    max_retries=MAX_TRANSIENT_RETRIES,
    min_backoff=1000,
    max_backoff=60 * 1000,
    retry_when=_retry_when,
)
async def deliver_webhook(delivery_id: int) -> None:
    """Make the due attempt of one delivery; a planned retry re-queues this message delayed."""
    outcome = await deliver(delivery_id)
    if outcome.retry_in is not None:
        raise ScheduledRetry(delivery_id, outcome.retry_in)


@task_actor("retry_failed_webhooks", time_limit_s=5 * 60)
async def retry_failed_webhooks(ctx: TaskContext) -> Any:
    """Re-queue pending deliveries whose next attempt is overdue (their message was lost)."""
    requeued: list[int] = []
    while True:
        async with transaction() as session:
            batch = await requeue_due_deliveries(session)
        requeued.extend(batch)
        await ctx.progress(len(requeued), message="requeued overdue deliveries")
        if len(batch) < SWEEP_BATCH:
            break
    return {"requeued": len(requeued), "delivery_ids": requeued[:100]}
