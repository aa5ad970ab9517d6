"""HTTP for the schedule: what the scheduler runs, when it last ran and runs next."""

from __future__ import annotations

from litestar import Controller, get

from app.api_support import Db
from app.schedule import service
from app.schedule.schemas import Schedule


class ScheduleController(Controller):
    path = "/api/v1/schedule"
    tags = ["schedule"]

    @get(
        "/",
        summary="Scheduled jobs with their last and next run",
        description=(
            "The scheduler's table (cron in the configured time zone, TZ), the last fire "
            "recorded for each job with its task's status, the next fire time, and which "
            "scheduler replica currently leads. `make scheduler-run JOB=name` fires one now."
        ),
    )
    async def list_schedule(self, db: Db) -> Schedule:
        return await service.schedule(db)
