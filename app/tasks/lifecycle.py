"""Every change of a task's status, one function each with its SQL: the one owner of the rules.

    PENDING ──claim──▶ STARTED ──finish──▶ SUCCESS | FAILURE | CANCELLED | RETRYING
       │                 │  ▲                                                  │
     cancel           hand_back, reap_stale_tasks ──▶ RETRYING ──claim─────────┘
       ▼                 │
    CANCELLED    (cancel on STARTED: cancel_requested, applied at the next progress or claim)

    FAILURE | RETRYING | STARTED ──reset_for_requeue (dead letters)──▶ RETRYING

Who calls what: the api cancels (app/tasks/service.py), the worker claims, beats, records
progress, finishes or hands back (workers/task_actor.py, app/tasks/context.py), the
reap_stale_tasks job reaps, `make dlq-requeue` resets. The task's advisory lock
(app/tasks/locks.py) says who owns a STARTED task; `attempts` is the owner's fence token:
every write of an owner matches `status = STARTED AND attempts = <its claim>`, so a stale
owner's writes match no row. The races these rules settle are told in workers/task_actor.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import msgspec
import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.errors import Conflict, NotFound
from app.models import FINISHED_STATUSES, Task, TaskStatus
from app.outbox import send_task_messages
from app.tasks.locks import (
    LOCK_TIMEOUT,
    TASK_LOCK_NAMESPACE,
    TaskLock,
    lock_is_held_sql,
    task_lock_key,
)

log = structlog.get_logger(__name__)

WORKER_LOST = {"type": "WorkerLost", "message": "The worker running this task stopped responding"}


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# -- the api -------------------------------------------------------------------------------


async def cancel(session: AsyncSession, task_id: uuid.UUID) -> Task:
    """Ask a task to stop: a pending one is cancelled now, a running one at its next progress."""
    task = (
        await session.execute(select(Task).where(Task.id == task_id).with_for_update())
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"Task not found (id {task_id})")
    if task.status in FINISHED_STATUSES:
        raise Conflict(f"Task {task_id} already finished with status {task.status}")
    task.cancel_requested = True
    if task.status in (TaskStatus.PENDING, TaskStatus.RETRYING):
        task.status = TaskStatus.CANCELLED
        task.finished_at = dt.datetime.now(dt.UTC)
        task.message = "Cancelled before it started"
    await session.flush()
    return task


# -- the owner (a worker holding the task's lock) ------------------------------------------


@dataclass(frozen=True)
class Claim:
    params: dict[str, Any]
    checkpoint: Any
    attempts: int
    max_attempts: int


async def claim(lock: TaskLock) -> Claim | None:
    """Take the task (we hold its lock); None when there is nothing to run.

    PENDING/RETRYING/STARTED -> STARTED in one locked transaction on the lock connection
    (STARTED here means its owner died: it held the lock until then); `attempts` grows with
    every claim. A finished task is skipped; a requested cancel is applied; an owner that
    died on the last allowed attempt fails the task (the reaper's rule, applied sooner).
    """
    connection, task_id = lock.connection, lock.task_id
    async with connection.transaction():
        current = await connection.fetchrow(
            "SELECT status, cancel_requested, attempts, max_attempts FROM tasks "
            "WHERE id = $1 FOR UPDATE",
            task_id,
            timeout=LOCK_TIMEOUT,
        )
        if current is None:
            log.warning("task row missing; message dropped")
            return None
        status = TaskStatus(current["status"])
        if status in FINISHED_STATUSES:
            log.info("task already finished; redelivered message skipped", status=status)
            return None
        if current["cancel_requested"]:
            await connection.execute(
                "UPDATE tasks SET status = $2, finished_at = now(), message = $3 WHERE id = $1",
                task_id,
                TaskStatus.CANCELLED.value,
                "Cancelled on request"
                if status == TaskStatus.STARTED
                else "Cancelled before it started",
            )
            return None
        if status == TaskStatus.STARTED and current["attempts"] >= current["max_attempts"]:
            await connection.execute(
                "UPDATE tasks SET status = $2, finished_at = now(), error = $3 WHERE id = $1",
                task_id,
                TaskStatus.FAILURE.value,
                WORKER_LOST,
            )
            log.warning("task lost its worker on its last attempt; failed")
            return None
        row = await connection.fetchrow(
            """
            UPDATE tasks SET status = $2, attempts = attempts + 1,
                started_at = COALESCE(started_at, now()), heartbeat_at = now(),
                finished_at = NULL
            WHERE id = $1
            RETURNING params, checkpoint, attempts, max_attempts
            """,
            task_id,
            TaskStatus.STARTED.value,
        )
    if status == TaskStatus.STARTED:
        log.info("task taken over from a worker that is gone")
    # params are json (text to asyncpg, decoded here); the checkpoint is jsonb (the lock
    # connection's codec decodes it).
    params = msgspec.json.decode(row["params"]) if row["params"] else {}
    return Claim(params, row["checkpoint"], row["attempts"], row["max_attempts"])


async def heartbeat(connection: asyncpg.Connection, task_id: uuid.UUID, attempt: int) -> bool:
    """Beat over the lock connection; False when the task is no longer ours (fence).

    Connection errors propagate: on the lock connection they mean the lock is gone too.
    """
    outcome = await connection.execute(
        "UPDATE tasks SET heartbeat_at = now() WHERE id = $1 AND status = $2 AND attempts = $3",
        task_id,
        TaskStatus.STARTED.value,
        attempt,
        timeout=LOCK_TIMEOUT,
    )
    return outcome != "UPDATE 0"


ProgressOutcome = Literal["running", "cancel_requested", "taken_over", "missing"]


async def record_progress(
    session: AsyncSession,
    task_id: uuid.UUID,
    attempt: int,
    current: int,
    total: int | None,
    message: str | None,
    checkpoint: Any,
) -> ProgressOutcome:
    """Store progress (and a checkpoint, if given) of our STARTED attempt, fenced, in `session`.

    `taken_over`: a newer claim (or the reaper) has the task; `missing`: no tasks row (a job
    run without one); `cancel_requested`: the client asked to cancel.
    """
    row = (
        await session.execute(
            text(
                """
                UPDATE tasks SET progress_current = :current,
                    progress_total = COALESCE(:total, progress_total),
                    message = COALESCE(:message, message),
                    checkpoint = COALESCE(CAST(:checkpoint AS jsonb), checkpoint),
                    heartbeat_at = now()
                WHERE id = :id AND status = :started AND attempts = :attempt
                RETURNING cancel_requested
                """
            ),
            {
                "id": task_id,
                "started": TaskStatus.STARTED.value,
                "attempt": attempt,
                "current": current,
                "total": total,
                "message": message,
                "checkpoint": None if checkpoint is None else _json(checkpoint),
            },
        )
    ).first()
    if row is None:
        exists = (
            await session.execute(text("SELECT 1 FROM tasks WHERE id = :id"), {"id": task_id})
        ).first()
        return "missing" if exists is None else "taken_over"
    return "cancel_requested" if row.cancel_requested else "running"


async def finish(
    task_id: uuid.UUID,
    attempt: int,
    status: TaskStatus,
    *,
    result: Any = None,
    error: Any = None,
    message: str | None = None,
) -> bool:
    """Record the outcome of our attempt; False if the task is no longer ours (fence).

    SUCCESS, FAILURE and CANCELLED are final; RETRYING waits for the message's next delivery.
    """
    async with transaction() as session:
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET status = :status,
                        result = COALESCE(CAST(:result AS jsonb), result),
                        error = CAST(:error AS jsonb),
                        message = COALESCE(:message, message),
                        finished_at = CASE WHEN :finished THEN now() END,
                        progress_current = CASE WHEN :succeeded
                                                THEN GREATEST(progress_current, progress_total)
                                                ELSE progress_current END
                    WHERE id = :id AND status = :started AND attempts = :attempt
                    RETURNING id
                    """
                ),
                {
                    "id": task_id,
                    "attempt": attempt,
                    "started": TaskStatus.STARTED.value,
                    "status": status.value,
                    "finished": status in FINISHED_STATUSES,
                    "succeeded": status == TaskStatus.SUCCESS,
                    "result": None if result is None else _json(result),
                    "error": None if error is None else _json(error),
                    "message": message,
                },
            )
        ).first()
    if row is None:
        log.warning("task was taken over by another claim; outcome not recorded", status=status)
    return row is not None


async def hand_back(task_id: uuid.UUID, attempt: int, reason: str) -> bool:
    """Put our STARTED task back to RETRYING, checkpoint kept; the attempt is not counted.
    False if the task is no longer ours (fence)."""
    async with transaction() as session:
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET status = :retrying, max_attempts = max_attempts + 1,
                        message = :message
                    WHERE id = :id AND status = :started AND attempts = :attempt
                    RETURNING id
                    """
                ),
                {
                    "id": task_id,
                    "attempt": attempt,
                    "started": TaskStatus.STARTED.value,
                    "retrying": TaskStatus.RETRYING.value,
                    "message": f"Interrupted ({reason}); resumes from its checkpoint",
                },
            )
        ).first()
    return row is not None


# -- housekeeping --------------------------------------------------------------------------


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


# A dead-lettered message may belong to a task in any of these (a worker lost mid-run).
REQUEUEABLE = (TaskStatus.FAILURE, TaskStatus.RETRYING, TaskStatus.STARTED)


async def reset_for_requeue(session: AsyncSession, task_ids: list[uuid.UUID]) -> None:
    """Make the tasks of dead-lettered messages claimable again: RETRYING, one more attempt."""
    if not task_ids:
        return
    await session.execute(
        text(
            "UPDATE tasks SET status = :retrying, finished_at = NULL, "
            "max_attempts = attempts + 1 "
            "WHERE id = ANY(:ids) AND status = ANY(:requeueable)"
        ),
        {
            "ids": task_ids,
            "retrying": TaskStatus.RETRYING.value,
            "requeueable": [status.value for status in REQUEUEABLE],
        },
    )
