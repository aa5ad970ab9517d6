"""The schedule as the scheduler runs it: last fires from `scheduler_runs`, next from cron."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.schedule.leader_lock import APPLICATION_PREFIX, LEADER_LOCK_KEY
from app.schedule.plan import plan
from app.schedule.schemas import LastRun, Schedule, ScheduledJobOut
from app.tasks.kinds import TASK_QUEUES

# One probe of the (job_name, fire_time) unique index per job, however long the history.
LAST_RUNS = text(
    """
    SELECT r.job_name, r.fire_time, r.created_at, r.scheduler_id, r.task_id, t.status
    FROM unnest(CAST(:jobs AS text[])) AS job(name)
    CROSS JOIN LATERAL (
        SELECT * FROM scheduler_runs WHERE job_name = job.name ORDER BY fire_time DESC LIMIT 1
    ) r
    LEFT JOIN tasks t ON t.id = r.task_id
    """
)

# The session holding the leader's advisory lock (a bigint key: classid 0, objsubid 1).
LEADER = text(
    """
    SELECT a.application_name
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1
      AND l.objid = CAST(:key AS oid)
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)


async def schedule(session: AsyncSession) -> Schedule:
    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    jobs = plan(settings)
    last_runs = {
        row.job_name: row
        for row in (await session.execute(LAST_RUNS, {"jobs": [j.name for j in jobs]})).all()
    }
    holder = (await session.execute(LEADER, {"key": LEADER_LOCK_KEY})).scalar_one_or_none()
    items = []
    for planned in jobs:
        last = last_runs.get(planned.name)
        items.append(
            ScheduledJobOut(
                name=planned.name,
                description=planned.job.description,
                cron=planned.cron,
                queue=TASK_QUEUES[planned.name],
                misfire_grace_seconds=planned.misfire_grace_s,
                last_run=None
                if last is None
                else LastRun(
                    fire_time=last.fire_time,
                    enqueued_at=last.created_at,
                    scheduler_id=last.scheduler_id,
                    task_id=None if last.task_id is None else str(last.task_id),
                    status=last.status,
                ),
                next_run_at=planned.next_fire_time(now),
            )
        )
    return Schedule(
        timezone=settings.tz,
        leader=holder.removeprefix(APPLICATION_PREFIX) if holder else None,
        items=items,
    )
