"""Task-table housekeeping: reap tasks whose worker is gone (lock free), prune old finished ones."""

from __future__ import annotations

from typing import Any

from app.config import get_settings
from app.db import transaction
from app.tasks.context import TaskContext
from app.tasks.lifecycle import reap_stale_tasks as reap
from app.tasks.service import prune_finished_tasks as prune
from workers.task_actor import task_actor


@task_actor("reap_stale_tasks", time_limit_s=60)
async def reap_stale_tasks(ctx: TaskContext) -> Any:
    async with transaction() as session:
        return await reap(session, float(get_settings().task_stale_after))


@task_actor("prune_finished_tasks", time_limit_s=10 * 60)
async def prune_finished_tasks(ctx: TaskContext) -> Any:
    async with transaction() as session:
        return await prune(session, get_settings().task_retention_days)
