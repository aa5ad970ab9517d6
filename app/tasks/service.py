"""Reading, cancelling, reaping and pruning tasks (the tasks table is the source of truth)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound
from app.models import (
    FINISHED_STATUSES,
    IdempotencyKey,
    OutboxMessage,
    SchedulerRun,
    Task,
    TaskStatus,
)
from app.outbox import send_task_messages
from app.tasks.locks import TASK_LOCK_NAMESPACE, lock_is_held_sql, task_lock_key
from app.tasks.schemas import TaskOut, TaskProgress


def task_out(task: Task) -> TaskOut:
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
    task = await session.get(Task, task_id, populate_existing=True)
    if task is None:
        raise NotFound(f"Task {task_id} not found")
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
        .where(where)
        .order_by(Task.created_at.desc(), Task.id)
        .offset(offset)
        .limit(limit)
    )
    return [task_out(t) for t in rows.scalars().all()], total


async def cancel_task(session: AsyncSession, task_id: uuid.UUID) -> TaskOut:
    """Ask a task to stop: a pending one is cancelled now, a running one at its next progress."""
    task = (
        await session.execute(select(Task).where(Task.id == task_id).with_for_update())
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"Task {task_id} not found")
    if task.status in FINISHED_STATUSES:
        raise Conflict(f"Task {task_id} already finished with status {task.status}")
    task.cancel_requested = True
    if task.status in (TaskStatus.PENDING, TaskStatus.RETRYING):
        task.status = TaskStatus.CANCELLED
        task.finished_at = dt.datetime.now(dt.UTC)
        task.message = "Cancelled before it started"
    await session.flush()
    return task_out(task)


async def reap_stale_tasks(session: AsyncSession, stale_after_s: float) -> dict[str, int]:
    """STARTED tasks whose worker is gone: retry them now, or fail them if out of attempts.

    A task's owner holds its advisory lock (app/tasks/locks.py) for the whole run, so a
    STARTED task whose lock is free has no live owner and is re-enqueued at once. A stale
    heartbeat alone proves nothing: a slow worker still holding the lock is left alone
    (counted as `held`). Candidates come from pg_locks (lock looks free) or the heartbeat
    (the old rule, independent of pg_locks); each is then confirmed by taking its lock for
    this transaction, under the row lock: a worker claiming it meanwhile either got the
    lock first (we skip) or waits for our commit and finds it RETRYING (it claims then).
    """
    candidates = (
        (
            await session.execute(
                text(
                    f"""
                SELECT id FROM tasks t WHERE status = :started
                  AND (NOT {lock_is_held_sql("t.id")}
                       OR heartbeat_at < now() - make_interval(secs => :stale))
                FOR UPDATE SKIP LOCKED
                """
                ),
                {"started": TaskStatus.STARTED.value, "stale": stale_after_s},
            )
        )
        .scalars()
        .all()
    )
    orphans = [
        task_id
        for task_id in candidates
        if (
            await session.execute(
                text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"),
                {"namespace": TASK_LOCK_NAMESPACE, "key": task_lock_key(task_id)},
            )
        ).scalar_one()
    ]
    rows = (
        await session.execute(
            text(
                """
                UPDATE tasks SET
                    status = CASE WHEN attempts < max_attempts THEN :retrying ELSE :failure END,
                    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END,
                    error = jsonb_build_object(
                        'type', 'WorkerLost',
                        'message', 'The worker running this task stopped responding')
                WHERE id = ANY(:ids) AND status = :started
                RETURNING id, kind, status
                """
            ),
            {
                "ids": orphans,
                "started": TaskStatus.STARTED.value,
                "retrying": TaskStatus.RETRYING.value,
                "failure": TaskStatus.FAILURE.value,
            },
        )
    ).all()
    retried = [row for row in rows if row.status == TaskStatus.RETRYING]
    await send_task_messages(session, [(row.kind, row.id) for row in retried])
    return {
        "retried": len(retried),
        "failed": len(rows) - len(retried),
        "held": len(candidates) - len(orphans),
    }


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
