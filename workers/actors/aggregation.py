"""aggregate_products: the async form of aggregation (app/aggregation/jobs.py)."""

from __future__ import annotations

from typing import Any

from app.aggregation.jobs import run_aggregation
from app.errors import NotFound
from app.tasks.context import TaskContext, TaskFailed
from workers.task_actor import task_actor


@task_actor("aggregate_products", time_limit_s=30 * 60, stops_on_shutdown=True)
async def aggregate_products(ctx: TaskContext) -> Any:
    """Aggregate `unique_codes` into `batch_id`, committing progress with each chunk."""
    try:
        return await run_aggregation(ctx)
    except NotFound as exc:  # the batch is gone: no retry can help
        raise TaskFailed(str(exc)) from exc
