"""The scheduler loop: follow until leader, then run the schedule until leadership ends."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from typing import Any

import structlog
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.config import Settings
from app.schedule.plan import PlannedJob, plan
from scheduler.fire import SCHEDULER_ID, fire_within_grace
from scheduler.leader import CONNECTION_ERRORS, Leadership

log = structlog.get_logger("scheduler")

LEADER_PING_SECONDS = 5.0
MAX_FIRES_IN_FLIGHT = 32  # per job; far above grace / interval for every scheduled job


class _Fire:
    """A Job seen through one scheduled fire: its function gets `fire_time=` bound."""

    def __init__(self, job: Job, fire_time: dt.datetime) -> None:
        self._job = job
        self.func = functools.partial(job.func, fire_time=fire_time)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


class FireTimeExecutor(AsyncIOExecutor):
    """AsyncIOExecutor handing each job the fire time APScheduler scheduled it for.

    APScheduler 3 does not pass it on; the wall clock at run time differs per replica and
    per delay, so it could not key a fire. With coalesce=True APScheduler submits only
    the latest due fire time, and that is the one bound.
    """

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        super()._do_submit_job(_Fire(job, run_times[-1]), run_times[-1:])


async def run_planned(
    job_name: str, *, grace_s: float, fire_time: dt.datetime | None = None
) -> None:
    # fire_time defaults only to satisfy APScheduler's signature check at add_job.
    if fire_time is None:
        raise RuntimeError("run_planned needs the fire time FireTimeExecutor binds")
    await fire_within_grace(job_name, fire_time.astimezone(dt.UTC), grace_s)


def build_scheduler(settings: Settings, jobs: list[PlannedJob]) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(
        timezone=settings.tz,
        executors={"default": FireTimeExecutor()},
        # coalesce: several due fires run once (the latest). Fires of one job may overlap
        # (a catch-up still committing when the next comes due, a fire retrying an absent
        # database): each has its own (job, fire_time) key, and APScheduler would drop, not
        # delay, a fire over max_instances.
        job_defaults={"coalesce": True, "max_instances": MAX_FIRES_IN_FLIGHT},
    )
    now = dt.datetime.now(dt.UTC)
    for planned in jobs:
        scheduler.add_job(
            run_planned,
            planned.trigger,
            args=[planned.name],
            kwargs={"grace_s": planned.misfire_grace_s},
            id=planned.name,
            name=planned.job.description,
            misfire_grace_time=planned.misfire_grace_s,
            next_run_time=planned.first_run_time(now),
        )
    return scheduler


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Follow until the lock is ours; lead until it is lost or we are stopped; repeat."""
    leadership = Leadership(SCHEDULER_ID)
    jobs = plan(settings)
    log.info(
        "scheduler started",
        id=SCHEDULER_ID,
        timezone=settings.tz,
        jobs={job.name: job.cron for job in jobs},
    )
    try:
        while not stop.is_set():
            try:
                leader = await leadership.try_acquire()
            except CONNECTION_ERRORS as exc:
                log.warning("cannot reach the database; will retry", error=repr(exc))
                await leadership.release()
                leader = False
            if leader:
                await _lead(settings, jobs, leadership, stop)
            await _wait(stop, settings.scheduler_leader_retry)
    finally:
        await leadership.release()


async def _lead(
    settings: Settings, jobs: list[PlannedJob], leadership: Leadership, stop: asyncio.Event
) -> None:
    log.info("leader: running the schedule", id=SCHEDULER_ID)
    scheduler = build_scheduler(settings, jobs)
    scheduler.start()
    try:
        while not stop.is_set():
            await _wait(leadership.lost, LEADER_PING_SECONDS, also=stop)
            if not stop.is_set() and not await leadership.still_held():
                log.warning("leadership lost; following again", id=SCHEDULER_ID)
                return
    finally:
        scheduler.shutdown(wait=False)  # cancels a fire in flight: its transaction rolls back
        await leadership.release()


async def _wait(event: asyncio.Event, timeout: float, *, also: asyncio.Event | None = None) -> None:
    """Sleep up to `timeout`, waking early when `event` (or `also`) is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (event, also) if e is not None]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
