"""Queueing notifications (sending them is the send_notification job, app/notifications/jobs.py)."""

from __future__ import annotations

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Task
from app.notifications.schemas import Notification
from app.outbox import enqueue_task
from app.tasks.kinds import PRIORITY_HIGH


async def enqueue_notification(session: AsyncSession, notification: Notification) -> Task:
    """Queue an email on `fast` ahead of normal-priority work (a priority queue)."""
    return await enqueue_task(
        session,
        "send_notification",
        msgspec.to_builtins(notification),
        priority=PRIORITY_HIGH,
        max_attempts=5,
    )
