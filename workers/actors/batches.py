"""close_expired_batches: closes every open batch whose shift has ended."""

from __future__ import annotations

from typing import Any

from app.batches.service import close_expired_batches as close_expired
from app.db import transaction
from app.tasks.context import TaskContext
from workers.task_actor import task_actor


@task_actor("close_expired_batches", time_limit_s=10 * 60)
async def close_expired_batches(ctx: TaskContext) -> Any:
    async with transaction() as session:
        closed = await close_expired(session)
    await ctx.progress(len(closed), len(closed), force=True)
    return {"closed": len(closed), "batch_ids": closed}
