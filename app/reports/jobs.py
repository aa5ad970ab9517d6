"""The generate_report job: render, store, record and announce one report (own transactions).

Rendering happens in a thread fed by product chunks queried on the event loop; the file goes
to a temp directory, then to S3 in parts. The files row, the `report_generated` event and the
optional email are committed together, and a re-run of a task that already stored its report
only re-signs the link, so a redelivered message never announces or mails a report twice.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Final

import msgspec
from sqlalchemy import select

from app.batches.schemas import BatchListItem
from app.config import get_settings
from app.db import transaction
from app.models import Product
from app.notifications.schemas import Notification
from app.notifications.service import enqueue_notification
from app.outbox import emit_event
from app.reports.schemas import FileResult, ProductRow, ReportFormat
from app.reports.service import report_data
from app.reports.tabular import write_in_thread
from app.storage import (
    PDF_TYPE,
    XLSX_TYPE,
    StoredObject,
    object_key,
    presigned_url,
    record_file,
    store,
    stored_object_of_task,
)
from app.tasks.context import Progress

PRODUCT_CHUNK: Final = 5_000


async def product_chunks(
    batch_id: int, total: int, progress: Progress, limit: int | None = None
) -> AsyncIterator[list[ProductRow]]:
    """The batch's products in id order, a short transaction per chunk (keyset paging)."""
    last_id = 0
    done = 0
    wanted = total if limit is None else min(total, limit)
    while limit is None or done < limit:
        size = PRODUCT_CHUNK if limit is None else min(PRODUCT_CHUNK, limit - done)
        async with transaction() as session:
            rows = (
                await session.execute(
                    select(
                        Product.id,
                        Product.unique_code,
                        Product.is_aggregated,
                        Product.aggregated_at,
                    )
                    .where(Product.batch_id == batch_id, Product.id > last_id)
                    .order_by(Product.id)
                    .limit(size)
                )
            ).all()
        if not rows:
            return
        last_id = rows[-1].id
        done += len(rows)
        yield [(r.unique_code, r.is_aggregated, r.aggregated_at) for r in rows]
        await progress(done, wanted, "writing products")


def report_file_name(batch: BatchListItem, fmt: ReportFormat) -> str:
    extension = "xlsx" if fmt == "excel" else "pdf"
    return f"batch_{batch.batch_number}_{batch.batch_date.isoformat()}_report.{extension}"


async def file_result(stored: StoredObject) -> FileResult:
    """A fresh presigned link to a stored object."""
    ttl = get_settings().presign_ttl
    signed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    url = await presigned_url(stored.bucket, stored.key, ttl)
    return FileResult(
        file_url=url,
        file_name=stored.file_name,
        size=stored.size,
        expires_at=signed_at + dt.timedelta(seconds=ttl),
    )


def report_email(
    batch: BatchListItem, fmt: ReportFormat, result: FileResult, to: str
) -> Notification:
    kind = "Excel" if fmt == "excel" else "PDF"
    return Notification(
        to=to,
        subject=f"{kind} report for batch {batch.batch_number} of {batch.batch_date.isoformat()}",
        body=(
            f"The {kind} report for batch {batch.batch_number} of "
            f"{batch.batch_date.isoformat()} ({batch.nomenclature}) is ready:\n\n"
            f"{result.file_url}\n\n"
            f"File: {result.file_name}, {result.size} bytes. "
            f"The link works until {result.expires_at.isoformat()}.\n"
        ),
    )


async def generate_report(
    task_id: uuid.UUID,
    batch_id: int,
    fmt: ReportFormat,
    email: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """Render, store and announce the report of `batch_id`; returns the task result."""
    async with transaction() as session:
        done = await stored_object_of_task(session, task_id, "report")
        if done is not None:  # a redelivered task whose report is stored and announced
            return msgspec.to_builtins(await file_result(done))
        data = await report_data(session, batch_id)

    file_name = report_file_name(data.batch, fmt)
    key = object_key(f"batches/{batch_id}", task_id, file_name)
    content_type = XLSX_TYPE if fmt == "excel" else PDF_TYPE
    await progress(0, data.total, "rendering")
    # Imported here: fpdf2 takes a second to import and only report jobs need the renderers.
    from app.reports.excel import write_excel_report
    from app.reports.pdf import MAX_PDF_PRODUCTS, write_pdf_report

    with tempfile.TemporaryDirectory(prefix="report-") as directory:
        path = os.path.join(directory, file_name)
        if fmt == "excel":
            chunks = product_chunks(batch_id, data.total, progress)
            await write_in_thread(partial(write_excel_report, path, data), chunks)
        else:
            chunks = product_chunks(batch_id, data.total, progress, MAX_PDF_PRODUCTS)
            await write_in_thread(partial(write_pdf_report, path, data), chunks)
        await progress(data.total, data.total, "uploading")
        stored = await store("report", key, path, content_type, file_name)

    result = await file_result(stored)
    async with transaction() as session:
        await record_file(session, stored, task_id)
        await emit_event(
            session,
            "report_generated",
            {
                "batch_id": batch_id,
                "task_id": str(task_id),
                "format": fmt,
                **msgspec.to_builtins(result),
            },
        )
        if email:
            await enqueue_notification(session, report_email(data.batch, fmt, result, email))
    return msgspec.to_builtins(result)
