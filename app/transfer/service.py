"""Import and export rules that take a session: accepting an upload, counting an export.

`accept_import` (api) inspects and stores the upload and queues import_batches in the
request's transaction; the import and export themselves are jobs, app/transfer/jobs.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from litestar.datastructures import UploadFile
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.batches.schemas import BatchFilters
from app.batches.service import filtered_batches
from app.config import get_settings
from app.models import Batch, Task
from app.outbox import enqueue_task
from app.storage import (
    CSV_TYPE,
    XLSX_TYPE,
    object_key,
    record_file,
    store,
)
from app.transfer.importer import import_format, inspect_upload


async def accept_import(session: AsyncSession, upload: UploadFile) -> Task:
    """Check and store an upload, then queue its import; a refused file leaves no trace."""
    settings = get_settings()
    file_name = os.path.basename(upload.filename or "") or "upload"
    fmt = import_format(file_name, upload.content_type or "")
    size = await asyncio.to_thread(inspect_upload, upload.file, fmt, settings)
    key = object_key("uploads", uuid.uuid4(), f"source.{fmt}")
    content_type = XLSX_TYPE if fmt == "xlsx" else CSV_TYPE
    stored = await store("import", key, upload.file, content_type, file_name)
    task = await enqueue_task(
        session,
        "import_batches",
        {"bucket": stored.bucket, "key": key, "file_name": file_name, "format": fmt, "size": size},
        max_attempts=3,
    )
    await record_file(session, stored, task.id)
    return task


async def count_batches(session: AsyncSession, filters: BatchFilters) -> int:
    ids = filtered_batches(filters).with_only_columns(Batch.id).order_by(None).subquery()
    return (await session.execute(select(func.count()).select_from(ids))).scalar_one()
