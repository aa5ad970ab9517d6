"""refresh_statistics: recompute the dashboard snapshot (scheduled every 5 minutes)."""

from __future__ import annotations

from typing import Any

from app.analytics.jobs import refresh_dashboard
from app.tasks.context import TaskContext
from workers.task_actor import task_actor


@task_actor("refresh_statistics", time_limit_s=10 * 60)
async def refresh_statistics(ctx: TaskContext) -> Any:
    dashboard, duration_ms = await refresh_dashboard(force=True)
    await ctx.progress(1, 1, force=True)
    return {
        "generated_at": dashboard.generated_at.isoformat(),
        "duration_ms": duration_ms,
        "total_batches": dashboard.summary.total_batches,
        "total_products": dashboard.summary.total_products,
    }
