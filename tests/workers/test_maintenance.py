"""Task-table housekeeping: the reaper and the pruner, against the real database."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from sqlalchemy import func, select, text

from app.db import transaction
from app.models import IdempotencyKey, OutboxMessage, SchedulerRun, Task
from app.tasks.lifecycle import reap_stale_tasks
from app.tasks.locks import TASK_LOCK_NAMESPACE, task_lock_key
from app.tasks.service import prune_finished_tasks
from tests import support


async def _task(
    status: str, *, heartbeat_age_s: float = 0, attempts: int = 1, finished_days: float = 0
) -> uuid.UUID:
    now = dt.datetime.now(dt.UTC)
    task = Task(
        id=uuid.uuid4(),
        kind="aggregate_products",
        queue="heavy",
        status=status,
        attempts=attempts,
        max_attempts=4,
        params={},
        heartbeat_at=now - dt.timedelta(seconds=heartbeat_age_s),
        finished_at=now - dt.timedelta(days=finished_days) if finished_days else None,
    )
    async with transaction() as session:
        session.add(task)
    return task.id


async def _status(task_id: uuid.UUID) -> str | None:
    async with transaction() as session:
        return (
            await session.execute(text("SELECT status FROM tasks WHERE id = :id"), {"id": task_id})
        ).scalar_one_or_none()


async def _hold_lock(task_id: uuid.UUID) -> asyncpg.Connection:
    """Take a task's advisory lock the way a worker does: a session lock on its own connection."""
    connection = await asyncpg.connect(support.TEST_DATABASE_URL.replace("+asyncpg", ""))
    assert await connection.fetchval(
        "SELECT pg_try_advisory_lock($1, $2)", TASK_LOCK_NAMESPACE, task_lock_key(task_id)
    )
    return connection


async def test_reaper_retries_tasks_whose_lock_is_free_and_never_held_ones():
    # Lock free: the owner is gone, however fresh its last beat.
    dead = await _task("STARTED", heartbeat_age_s=1)
    exhausted = await _task("STARTED", heartbeat_age_s=600, attempts=4)
    # Lock held: alive, even when its heartbeat is an hour old (a slow worker).
    alive = await _task("STARTED", heartbeat_age_s=1)
    slow = await _task("STARTED", heartbeat_age_s=3600)
    holders = [await _hold_lock(alive), await _hold_lock(slow)]
    try:
        async with transaction() as session:
            reaped = await reap_stale_tasks(session, 60)
        assert reaped == {"retried": 1, "failed": 1, "held": 1}  # `slow`: stale beat, lock held
        assert await _status(dead) == "RETRYING"
        assert await _status(exhausted) == "FAILURE"
        assert await _status(alive) == "STARTED"
        assert await _status(slow) == "STARTED"
        async with transaction() as session:
            message_ids = (
                (await session.execute(select(OutboxMessage.payload["message_id"].astext)))
                .scalars()
                .all()
            )
        assert message_ids == [str(dead)]  # re-enqueued under the task id: stays idempotent
    finally:
        for holder in holders:
            await holder.close()

    # Their connections ended (the worker died): both are taken back on the next round.
    async with transaction() as session:
        assert await reap_stale_tasks(session, 60) == {"retried": 2, "failed": 0, "held": 0}
    assert await _status(alive) == await _status(slow) == "RETRYING"


def _idempotency_key(key: str, expires_in: dt.timedelta) -> IdempotencyKey:
    return IdempotencyKey(
        scope="anonymous",
        key=key,
        request_hash="0" * 64,
        method="POST",
        path="/api/v1/batches/export",
        response_status=202,
        response_body=b"{}",
        content_type="application/json",
        expires_at=dt.datetime.now(dt.UTC) + expires_in,
    )


async def test_pruner_keeps_recent_and_unfinished_work():
    old = await _task("SUCCESS", finished_days=30)
    recent = await _task("SUCCESS", finished_days=1)
    running = await _task("STARTED")
    now = dt.datetime.now(dt.UTC)
    async with transaction() as session:
        session.add_all(
            [
                SchedulerRun(
                    job_name="reap_stale_tasks",
                    fire_time=now - dt.timedelta(days=30),
                    scheduler_id="t",
                ),
                SchedulerRun(job_name="reap_stale_tasks", fire_time=now, scheduler_id="t"),
                _idempotency_key("expired", -dt.timedelta(seconds=1)),
                _idempotency_key("live", dt.timedelta(hours=23)),
            ]
        )
    async with transaction() as session:
        pruned = await prune_finished_tasks(session, 14)
    assert pruned == {"tasks": 1, "outbox": 0, "scheduler_runs": 1, "idempotency_keys": 1}
    async with transaction() as session:
        kept = (await session.execute(select(IdempotencyKey.key))).scalars().all()
    assert kept == ["live"]
    assert await _status(old) is None
    assert await _status(recent) == "SUCCESS"
    assert await _status(running) == "STARTED"
    async with transaction() as session:
        assert (
            await session.execute(select(func.count()).select_from(SchedulerRun))
        ).scalar_one() == 1
