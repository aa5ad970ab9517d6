"""cleanup_files (daily 02:00), and S3 buckets ensured when a worker boots."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from app.broker import broker
from app.storage import cleanup_expired_files, ensure_buckets_with_retry
from app.tasks.context import TaskContext
from workers.task_actor import task_actor


@task_actor("cleanup_files", time_limit_s=30 * 60)
async def cleanup_files(ctx: TaskContext) -> Any:
    """Delete stored objects and their rows past FILE_RETENTION_DAYS."""
    result = await cleanup_expired_files()
    await ctx.progress(result["deleted"], result["deleted"], "done")
    return result


class EnsureBuckets(Middleware):
    """Workers store files: create missing buckets at boot, in the background so a slow S3
    never delays the queues (a job that finds no bucket fails and is retried)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(
            target=asyncio.run,
            args=(ensure_buckets_with_retry(),),
            name="ensure-buckets",
            daemon=True,
        ).start()


broker.add_middleware(EnsureBuckets())
