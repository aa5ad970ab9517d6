"""The schedule, as one table: job name -> cron expression. Every job only enqueues its actor.

The scheduler process runs it (scheduler/runner.py); the api reports it (GET /schedule).
Triggers are cron-aligned (never interval-from-start), so every replica computes the same
fire times, and (job, fire_time) identifies one fire everywhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from app.config import Settings


@dataclass(frozen=True)
class ScheduledJob:
    name: str  # also the actor (task kind) it enqueues
    cron: str  # minute hour day month day-of-week, in the scheduler's time zone (TZ)
    misfire_grace_s: int  # how late a fire may still run (restart, failover, slow loop)
    description: str


SCHEDULE: tuple[ScheduledJob, ...] = (
    ScheduledJob(
        "close_expired_batches",
        "0 1 * * *",
        3600,
        "Close open batches whose shift has ended (daily 01:00)",
    ),
    ScheduledJob(
        "cleanup_files",
        "0 2 * * *",
        3600,
        "Delete stored files past FILE_RETENTION_DAYS (daily 02:00)",
    ),
    ScheduledJob(
        "refresh_statistics",
        "*/5 * * * *",
        240,
        "Precompute the dashboard snapshot (every 5 minutes)",
    ),
    ScheduledJob(
        "retry_failed_webhooks",
        "*/15 * * * *",
        600,
        "Deliver webhook attempts that are due (every 15 minutes)",
    ),
    ScheduledJob(
        "reap_stale_tasks",
        "* * * * *",
        50,
        "Re-enqueue STARTED tasks whose worker is gone (every minute)",
    ),
    ScheduledJob(
        "prune_finished_tasks",
        "30 3 * * *",
        3600,
        "Delete finished tasks and published outbox rows past retention (daily 03:30)",
    ),
)
JOBS = {job.name: job for job in SCHEDULE}


@dataclass(frozen=True)
class PlannedJob:
    """A job as this process runs it: the trigger and grace the settings resolve to."""

    job: ScheduledJob
    trigger: CronTrigger
    cron: str
    misfire_grace_s: int

    @property
    def name(self) -> str:
        return self.job.name

    def next_fire_time(self, now: dt.datetime) -> dt.datetime | None:
        return self.trigger.get_next_fire_time(None, now)

    def first_run_time(self, now: dt.datetime) -> dt.datetime | None:
        """Where a (re)started leader begins: the earliest fire still within the grace.

        A fire missed while no leader ran (restart, failover) is then still run, once:
        APScheduler coalesces the due fires into the latest, and a fire already run by
        the previous leader is a no-op thanks to the (job, fire_time) key.
        """
        return self.next_fire_time(now - dt.timedelta(seconds=self.misfire_grace_s))


def plan(settings: Settings) -> list[PlannedJob]:
    """The schedule for these settings (time zone, test interval, grace override)."""
    planned = []
    for job in SCHEDULE:
        grace = settings.scheduler_misfire_grace or job.misfire_grace_s
        if settings.scheduler_test_interval > 0:
            every = settings.scheduler_test_interval
            trigger = CronTrigger(second=f"*/{every}", timezone=settings.tz)
            cron = f"*/{every} * * * * * (seconds; SCHEDULER_TEST_INTERVAL)"
        else:
            trigger = CronTrigger.from_crontab(job.cron, timezone=settings.tz)
            cron = job.cron
        planned.append(PlannedJob(job, trigger, cron, grace))
    return planned
