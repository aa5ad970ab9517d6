"""import_batches and export_batches: files in, files out, on the heavy queue."""

from __future__ import annotations

from typing import Any

import msgspec

from app.storage import StoredObjectMissing
from app.tasks.context import TaskContext, TaskFailed
from app.transfer.importer import ImportRejected
from app.transfer.jobs import run_export, run_import
from app.transfer.schemas import ExportFilters
from workers.task_actor import task_actor


@task_actor("import_batches", time_limit_s=60 * 60, max_retries=3, stops_on_shutdown=True)
async def import_batches(ctx: TaskContext) -> Any:
    try:
        return await run_import(ctx)
    except ImportRejected as exc:
        raise TaskFailed(str(exc)) from exc
    except StoredObjectMissing as exc:
        raise TaskFailed("The uploaded file is no longer in storage") from exc


@task_actor("export_batches", time_limit_s=60 * 60, max_retries=3, stops_on_shutdown=True)
async def export_batches(ctx: TaskContext) -> Any:
    filters = msgspec.convert(ctx.params.get("filters") or {}, ExportFilters)
    return await run_export(
        ctx.task_id, ctx.params["format"], filters.to_batch_filters(), ctx.progress
    )
