"""Schedule schemas: the scheduled jobs with their last and next run."""

from __future__ import annotations

import datetime as dt

import msgspec


class LastRun(msgspec.Struct, kw_only=True):
    fire_time: dt.datetime  # the scheduled time of the fire (the exactly-once key)
    enqueued_at: dt.datetime
    scheduler_id: str  # host:pid of the scheduler (or manual:host:pid) that enqueued it
    task_id: str | None
    status: str | None  # the task's status; null once the task has been pruned


class ScheduledJobOut(msgspec.Struct, kw_only=True):
    name: str
    description: str
    cron: str
    queue: str
    misfire_grace_seconds: int
    last_run: LastRun | None
    next_run_at: dt.datetime | None


class Schedule(msgspec.Struct, kw_only=True):
    timezone: str
    leader: str | None  # the scheduler replica running the schedule now, if any
    items: list[ScheduledJobOut]
