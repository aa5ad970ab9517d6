"""deliver_webhook (the due attempts of a batch of deliveries) and retry_failed_webhooks (the
15-minute sweep)."""

from __future__ import annotations

from typing import Any

import dramatiq

from app.broker import broker
from app.db import transaction
from app.tasks.context import TaskContext
from app.tasks.kinds import TASK_QUEUES
from app.webhooks.delivery import deliver_batch
from app.webhooks.service import SWEEP_BATCH, requeue_due_deliveries
from workers.task_actor import is_retryable, task_actor

# Longest request (timeout <= 60 s; a batch's requests run concurrently) plus DNS and the
# short transactions.
DELIVER_TIME_LIMIT_MS = 2 * 60 * 1000
MAX_TRANSIENT_RETRIES = 5


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Database briefly unavailable: the rows are unchanged (or leased), so trying again is safe.
    # Planned retries are not dramatiq's: they are delayed messages the record queues.
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
async def deliver_webhook(*delivery_ids: int) -> None:
    """Make the due attempts of these deliveries; the record queues their planned retries."""
    await deliver_batch(delivery_ids)


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
