"""`python -m scheduler`: APScheduler 3.x that only enqueues, exactly once per fire.

Any number of replicas may run. Each fire is recorded as (job_name, fire_time) in
`scheduler_runs` under a unique key, in the same transaction as the task and outbox rows,
so only the replica that inserts the row enqueues. An advisory lock additionally elects
one leader, which keeps the others idle while it lives.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from app.config import get_settings
from app.db import dispose_engine, transaction
from app.logging import configure_logging
from app.outbox import enqueue_task
from scheduler.jobs import ScheduledJob, schedule

log = structlog.get_logger("scheduler")

MISFIRE_GRACE_SECONDS = 300
SCHEDULER_ID = f"{socket.gethostname()}:{os.getpid()}"


async def fire(job: ScheduledJob, fire_time: dt.datetime) -> str | None:
    """Enqueue `job` for `fire_time` unless some replica already did; returns the task id."""
    async with transaction() as session:
        inserted = (
            await session.execute(
                text(
                    """
                    INSERT INTO scheduler_runs (job_name, fire_time, scheduler_id)
                    VALUES (:job, :fire_time, :scheduler)
                    ON CONFLICT (job_name, fire_time) DO NOTHING RETURNING id
                    """
                ),
                {"job": job.name, "fire_time": fire_time, "scheduler": SCHEDULER_ID},
            )
        ).scalar_one_or_none()
        if inserted is None:
            return None
        task = await enqueue_task(session, job.name, {"fire_time": fire_time.isoformat()})
        await session.execute(
            text("UPDATE scheduler_runs SET task_id = :task WHERE id = :id"),
            {"task": task.id, "id": inserted},
        )
    log.info("job enqueued", job=job.name, fire_time=fire_time.isoformat(), task_id=str(task.id))
    return str(task.id)


async def run_job(job: ScheduledJob, scheduled_time: dt.datetime | None = None) -> None:
    fire_time = (scheduled_time or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    try:
        await fire(job, fire_time)
    except Exception:
        log.exception("job enqueue failed", job=job.name)


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    scheduler = AsyncIOScheduler(
        timezone=settings.tz,
        job_defaults={
            "coalesce": True,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            "max_instances": 1,
        },
    )
    for job in schedule(settings.tz):
        scheduler.add_job(
            _fire_with_time, job.trigger, args=[job], id=job.name, name=job.description
        )
    scheduler.start()
    log.info("scheduler started", jobs=[job.name for job in schedule(settings.tz)], id=SCHEDULER_ID)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    scheduler.shutdown(wait=False)
    await dispose_engine()
    log.info("scheduler stopped")


async def _fire_with_time(job: ScheduledJob) -> None:
    # APScheduler 3 does not pass the scheduled fire time; derive it from the trigger so
    # every replica computes the same key for the same fire.
    now = dt.datetime.now(dt.UTC)
    previous = job.trigger.get_next_fire_time(
        None, now - dt.timedelta(seconds=MISFIRE_GRACE_SECONDS)
    )
    fire_time = previous if previous is not None and previous <= now else now
    await run_job(job, fire_time)


if __name__ == "__main__":
    asyncio.run(main())
