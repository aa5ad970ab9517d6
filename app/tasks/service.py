"""Reading, cancelling and pruning tasks (the tasks table is the source of truth).

Status changes themselves are app/tasks/lifecycle.py's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from app.errors import NotFound
from app.models import (
    FINISHED_STATUSES,
    IdempotencyKey,
    OutboxMessage,
    SchedulerRun,
    Task,
    TaskStatus,
)
from app.tasks import lifecycle
from app.tasks.schemas import TaskOut, TaskProgress

# A status read never loads what only the worker needs: an aggregate-async task's params
# hold its 100,000 codes (2 MB), which a client polling every 20 ms would have read each time.
_STATUS_ONLY = (defer(Task.params), defer(Task.checkpoint))


def task_out(task: Task) -> TaskOut:
    # By hand, not msgspec.convert: the API's task_id is the id as a string and its progress
    # is computed (percent); properties for them would put the API's shape into the table
    # model, and convert is no faster here (the ORM's attribute reads are the cost).
    total, current = task.progress_total or 0, task.progress_current or 0
    if total > 0:
        percent = round(min(current, total) * 100.0 / total, 1)
    else:
        percent = 100.0 if task.status == TaskStatus.SUCCESS else 0.0
    return TaskOut(
        task_id=str(task.id),
        kind=task.kind,
        status=task.status,
        progress=TaskProgress(current=current, total=total, percent=percent),
        result=task.result,
        error=task.error,
        created_at=task.created_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
    )


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> TaskOut:
    task = await session.get(Task, task_id, populate_existing=True, options=_STATUS_ONLY)
    if task is None:
        raise NotFound(f"Task not found (id {task_id})")
    return task_out(task)


async def list_tasks(
    session: AsyncSession, *, status: str | None, kind: str | None, offset: int, limit: int
) -> tuple[list[TaskOut], int]:
    conditions: list[Any] = []
    if status is not None:
        conditions.append(Task.status == status)
    if kind is not None:
        conditions.append(Task.kind == kind)
    where = and_(True, *conditions)
    total = (
        await session.execute(select(func.count()).select_from(Task).where(where))
    ).scalar_one()
    rows = await session.execute(
        select(Task)
        .options(*_STATUS_ONLY)
        .where(where)
        .order_by(Task.created_at.desc(), Task.id)
        .offset(offset)
        .limit(limit)
    )
    return [task_out(t) for t in rows.scalars().all()], total


async def cancel_task(session: AsyncSession, task_id: uuid.UUID) -> TaskOut:
    """Ask a task to stop: a pending one is cancelled now, a running one at its next progress."""
    return task_out(await lifecycle.cancel(session, task_id))


async def prune_finished_tasks(session: AsyncSession, older_than_days: int) -> dict[str, int]:
    """Delete finished tasks, published outbox rows and scheduler fire records past retention,
    and expired idempotency keys."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=older_than_days)
    statements = {
        "tasks": delete(Task).where(Task.status.in_(FINISHED_STATUSES), Task.finished_at < cutoff),
        "outbox": delete(OutboxMessage).where(OutboxMessage.published_at < cutoff),
        # A fire older than any misfire grace can never be claimed again: its key is not needed.
        "scheduler_runs": delete(SchedulerRun).where(SchedulerRun.fire_time < cutoff),
        # Expired keys already count as absent; their own TTL applies, not the task retention.
        "idempotency_keys": delete(IdempotencyKey).where(IdempotencyKey.expires_at <= func.now()),
    }
    deleted: dict[str, int] = {}
    for name, statement in statements.items():
        result = cast(CursorResult[Any], await session.execute(statement))
        deleted[name] = result.rowcount or 0
    return deleted
