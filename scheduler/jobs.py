"""The schedule, as one table: job name -> trigger. Every job only enqueues its actor."""

from __future__ import annotations

from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger


@dataclass(frozen=True)
class ScheduledJob:
    name: str  # also the actor (task kind) it enqueues
    trigger: BaseTrigger
    description: str


def schedule(timezone: str) -> list[ScheduledJob]:
    return [
        ScheduledJob(
            "close_expired_batches",
            CronTrigger(hour=1, minute=0, timezone=timezone),
            "Close open batches whose shift has ended (daily 01:00)",
        ),
        ScheduledJob(
            "cleanup_files",
            CronTrigger(hour=2, minute=0, timezone=timezone),
            "Delete stored files past FILE_RETENTION_DAYS (daily 02:00)",
        ),
        ScheduledJob(
            "refresh_statistics",
            CronTrigger(minute="*/5", timezone=timezone),
            "Precompute dashboard aggregates (every 5 minutes)",
        ),
        ScheduledJob(
            "retry_failed_webhooks",
            CronTrigger(minute="*/15", timezone=timezone),
            "Deliver webhook attempts that are due (every 15 minutes)",
        ),
        ScheduledJob(
            "reap_stale_tasks",
            IntervalTrigger(minutes=1, timezone=timezone),
            "Retry tasks whose worker stopped heart-beating (every minute)",
        ),
        ScheduledJob(
            "prune_finished_tasks",
            CronTrigger(hour=3, minute=30, timezone=timezone),
            "Delete finished tasks and published outbox rows past retention (daily 03:30)",
        ),
    ]
