"""generate_report: render an Excel or PDF batch report, store it in S3, announce it."""

from __future__ import annotations

import uuid
from typing import Any

from app.errors import NotFound
from app.reports.jobs import generate_report as generate
from app.tasks.context import TaskContext, TaskFailed
from workers.task_actor import task_actor


@task_actor("generate_report", time_limit_s=30 * 60, max_retries=3, stops_on_shutdown=True)
async def generate_report(ctx: TaskContext) -> Any:
    params = ctx.params
    try:
        return await generate(
            uuid.UUID(str(ctx.task_id)),
            params["batch_id"],
            params["format"],
            params.get("email"),
            ctx.progress,
        )
    except NotFound as exc:  # deleted between the request and the job
        raise TaskFailed(str(exc)) from exc
