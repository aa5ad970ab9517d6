"""One fire of a scheduled job: enqueue its actor, exactly once per (job, fire_time).

The `scheduler_runs` row (unique on job_name, fire_time), the tasks row and its outbox
message are written in one transaction: the replica whose INSERT wins enqueues, any other
finds the row and does nothing; a crash before commit leaves nothing behind, so the fire
can be retried or caught up later. The api's outbox relay publishes after commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket

import sqlalchemy.exc
import structlog
from sqlalchemy import text

from app.db import transaction
from app.outbox import enqueue_task

log = structlog.get_logger("scheduler")

SCHEDULER_ID = f"{socket.gethostname()}:{os.getpid()}"


async def fire(
    job_name: str, fire_time: dt.datetime, scheduler_id: str = SCHEDULER_ID
) -> str | None:
    """Enqueue `job_name` for `fire_time` unless it already was; returns the new task id."""
    async with transaction() as session:
        run_id = (
            await session.execute(
                text(
                    """
                    INSERT INTO scheduler_runs (job_name, fire_time, scheduler_id)
                    VALUES (:job, :fire_time, :scheduler)
                    ON CONFLICT (job_name, fire_time) DO NOTHING RETURNING id
                    """
                ),
                {"job": job_name, "fire_time": fire_time, "scheduler": scheduler_id},
            )
        ).scalar_one_or_none()
        if run_id is None:
            log.info("fire already enqueued", job=job_name, fire_time=fire_time.isoformat())
            return None
        task = await enqueue_task(
            session,
            job_name,
            {"fire_time": fire_time.isoformat()},
            idempotency_key=f"schedule:{job_name}:{fire_time.isoformat()}",
        )
        await session.execute(
            text("UPDATE scheduler_runs SET task_id = :task WHERE id = :id"),
            {"task": task.id, "id": run_id},
        )
    log.info("job enqueued", job=job_name, fire_time=fire_time.isoformat(), task_id=str(task.id))
    return str(task.id)


async def fire_within_grace(job_name: str, fire_time: dt.datetime, grace_s: float) -> None:
    """`fire`, retrying a database that is briefly away until the fire's grace runs out."""
    deadline = fire_time + dt.timedelta(seconds=grace_s)
    delay = 0.5
    while True:
        try:
            await fire(job_name, fire_time)
            return
        except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            remaining = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
            if remaining <= delay:
                log.error("fire lost: database unavailable past the grace", job=job_name)
                return
            log.warning("fire failed; retrying", job=job_name, error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
