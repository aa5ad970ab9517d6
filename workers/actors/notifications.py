"""send_notification: email on the fast queue, queued with high priority."""

from __future__ import annotations

from typing import Any

import msgspec

from app.notifications.jobs import NotificationRejected, deliver
from app.notifications.schemas import Notification
from app.tasks.context import TaskContext, TaskFailed
from workers.task_actor import task_actor


@task_actor("send_notification", time_limit_s=2 * 60, max_retries=5, min_backoff_ms=5_000)
async def send_notification(ctx: TaskContext) -> Any:
    try:
        result = await deliver(msgspec.convert(ctx.params, Notification))
    except NotificationRejected as exc:
        raise TaskFailed(str(exc)) from exc
    return msgspec.to_builtins(result)
