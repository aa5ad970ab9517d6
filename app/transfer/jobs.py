"""The import_batches and export_batches jobs (own transactions, run by their actors).

`run_import` reads the stored file in a thread, writes valid rows chunk by chunk with a
checkpoint in the same transaction, so a retry resumes where the last commit ended, and
announces `import_completed` once. `run_export` streams the filtered batches, chunk by chunk,
into an xlsx or csv file in constant memory and stores it.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import msgspec
from sqlalchemy import Select, func, select

from app.batches.schemas import BatchFilters
from app.batches.service import filtered_batches
from app.config import get_settings
from app.db import transaction
from app.models import Batch, Product, WorkCenter
from app.outbox import emit_event
from app.reports.jobs import file_result
from app.reports.tabular import (
    CellFormats,
    csv_cell,
    iterate_in_own_thread,
    new_workbook,
    write_header,
    write_in_thread,
    write_row,
)
from app.storage import (
    CSV_TYPE,
    XLSX_TYPE,
    download_to,
    object_key,
    record_file,
    store,
    stored_object_of_task,
)
from app.tasks.context import JobContext, Progress
from app.transfer.importer import ImportFile, ParsedRow, write_rows
from app.transfer.schemas import (
    ExportFormat,
    ExportResult,
    ImportCheckpoint,
    ImportFormat,
    ImportSummary,
    RowError,
)
from app.transfer.service import count_batches

EXPORT_CHUNK: Final = 2_000
# The result lists this many row errors at most; `skipped` still counts them all.
MAX_REPORTED_ERRORS: Final = 1_000
EXPORT_COLUMNS: Final = (
    ("id", 8),
    ("batch_number", 14),
    ("batch_date", 12),
    ("is_closed", 10),
    ("closed_at", 20),
    ("task_description", 40),
    ("work_center_identifier", 14),
    ("work_center", 24),
    ("shift", 10),
    ("team", 20),
    ("nomenclature", 40),
    ("ekn_code", 14),
    ("shift_start", 20),
    ("shift_end", 20),
    ("product_count", 14),
    ("aggregated_count", 16),
    ("created_at", 20),
    ("updated_at", 20),
)


# -- import --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportChunk:
    total: int
    rows: list[ParsedRow]


def _import_chunks(path: str, fmt: ImportFormat, max_rows: int) -> Iterator[ImportChunk]:
    source = ImportFile(path, fmt, max_rows)
    for rows in source.chunks():
        yield ImportChunk(source.total, rows)


def _summary(state: ImportCheckpoint, total: int) -> dict[str, Any]:
    return msgspec.to_builtins(
        ImportSummary(
            total=total,
            created=state.created,
            updated=state.updated,
            skipped=state.skipped,
            errors=state.errors,
        )
    )


async def run_import(ctx: JobContext) -> dict[str, Any]:
    """Import the stored file of an import_batches task; returns the summary."""
    params = ctx.params
    state = msgspec.convert(ctx.checkpoint or {}, ImportCheckpoint)
    if state.completed:
        return _summary(state, state.processed)
    fmt: ImportFormat = params["format"]
    with tempfile.TemporaryDirectory(prefix="import-") as directory:
        path = os.path.join(directory, f"source.{fmt}")
        with open(path, "wb") as target:  # noqa: ASYNC230 - written in a thread
            await download_to(params["bucket"], params["key"], target)
        await ctx.progress(state.processed, None, "reading the file")
        seen = 0
        chunks = iterate_in_own_thread(
            partial(_import_chunks, path, fmt, get_settings().import_max_rows)
        )
        async for chunk in chunks:
            seen += len(chunk.rows)
            if seen <= state.processed:
                continue  # committed by an earlier attempt of this task
            async with transaction() as session:
                created, updated = await write_rows(session, chunk.rows)
                errors = [RowError(r.number, r.error) for r in chunk.rows if r.error is not None]
                state.processed = seen
                state.created += created
                state.updated += updated
                state.skipped += len(errors)
                state.errors.extend(errors[: max(0, MAX_REPORTED_ERRORS - len(state.errors))])
                await ctx.save_checkpoint(
                    session, msgspec.to_builtins(state), seen, chunk.total, "importing"
                )
    async with transaction() as session:
        summary = _summary(state, state.processed)
        await emit_event(
            session,
            "import_completed",
            {
                "task_id": str(ctx.task_id),
                "file_name": params["file_name"],
                **{k: v for k, v in summary.items() if k != "errors"},
            },
        )
        state.completed = True
        await ctx.save_checkpoint(
            session, msgspec.to_builtins(state), state.processed, state.processed, "completed"
        )
    return summary


# -- export --------------------------------------------------------------------------------


def export_page(filters: BatchFilters, after_id: int, limit: int) -> Select[*tuple[Any, ...]]:
    """One keyset page of export rows, flat and in EXPORT_COLUMNS order, in one query.

    The page's ids come from the list endpoint's `filtered_batches`; product counts are
    grouped over that page only. Plain rows (no ORM objects) keep 100,000 batches fast.
    """
    page = (
        filtered_batches(filters)
        .with_only_columns(Batch.id)
        .where(Batch.id > after_id)
        .limit(limit)
        .subquery()
    )
    counts = (
        select(
            Product.batch_id,
            func.count().label("products"),
            func.count().filter(Product.is_aggregated).label("aggregated"),
        )
        .where(Product.batch_id.in_(select(page.c.id)))
        .group_by(Product.batch_id)
        .subquery()
    )
    return (
        select(
            Batch.id,
            Batch.batch_number,
            Batch.batch_date,
            Batch.is_closed,
            Batch.closed_at,
            Batch.task_description,
            WorkCenter.identifier,
            WorkCenter.name,
            Batch.shift,
            Batch.team,
            Batch.nomenclature,
            Batch.ekn_code,
            Batch.shift_start,
            Batch.shift_end,
            func.coalesce(counts.c.products, 0),
            func.coalesce(counts.c.aggregated, 0),
            Batch.created_at,
            Batch.updated_at,
        )
        .join(page, page.c.id == Batch.id)
        .join(WorkCenter, WorkCenter.id == Batch.work_center_id)
        .outerjoin(counts, counts.c.batch_id == Batch.id)
        .order_by(Batch.id)
    )


def write_export_xlsx(path: str, chunks: Iterator[list[tuple[Any, ...]]]) -> int:
    workbook = new_workbook(path)
    formats = CellFormats(workbook)
    sheet = workbook.add_worksheet("Batches")
    write_header(sheet, 0, [c for c, _ in EXPORT_COLUMNS], [w for _, w in EXPORT_COLUMNS], formats)
    count = 0
    for chunk in chunks:
        for item in chunk:
            count += 1
            write_row(sheet, count, item, formats)
    sheet.autofilter(0, 0, max(count, 1), len(EXPORT_COLUMNS) - 1)
    workbook.close()
    return count


def write_export_csv(path: str, chunks: Iterator[list[tuple[Any, ...]]]) -> int:
    # A BOM so Excel opens UTF-8 (Cyrillic) correctly; csv_cell neutralises formulas.
    with open(path, "w", encoding="utf-8-sig", newline="") as target:
        writer = csv.writer(target)
        writer.writerow([column for column, _ in EXPORT_COLUMNS])
        count = 0
        for chunk in chunks:
            writer.writerows([csv_cell(v) for v in item] for item in chunk)
            count += len(chunk)
    return count


async def export_chunks(
    filters: BatchFilters, total: int, progress: Progress
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Export rows in id order, a keyset page and a short transaction per chunk."""
    last_id = 0
    done = 0
    while True:
        async with transaction() as session:
            rows = [
                tuple(row)
                for row in (await session.execute(export_page(filters, last_id, EXPORT_CHUNK)))
            ]
        if not rows:
            return
        last_id = rows[-1][0]
        done += len(rows)
        yield rows
        await progress(done, total, "exporting")


EXPORT_WRITERS: Final[dict[ExportFormat, tuple[str, str, Callable[..., int]]]] = {
    "excel": ("xlsx", XLSX_TYPE, write_export_xlsx),
    "csv": ("csv", CSV_TYPE, write_export_csv),
}


async def run_export(
    task_id: uuid.UUID, fmt: ExportFormat, filters: BatchFilters, progress: Progress
) -> dict[str, Any]:
    """Write the filtered batches to a file in S3; returns the result with a presigned link."""
    async with transaction() as session:
        done = await stored_object_of_task(session, task_id, "export")
        total = await count_batches(session, filters)
    extension, content_type, writer = EXPORT_WRITERS[fmt]
    if done is not None:  # a redelivered task whose file is already stored
        result = await file_result(done)
        return msgspec.to_builtins(ExportResult(**msgspec.structs.asdict(result), rows=total))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    file_name = f"batches_{stamp}.{extension}"
    key = object_key("batches", task_id, file_name)
    await progress(0, total, "exporting")
    with tempfile.TemporaryDirectory(prefix="export-") as directory:
        path = os.path.join(directory, file_name)
        rows = await write_in_thread(partial(writer, path), export_chunks(filters, total, progress))
        stored = await store("export", key, path, content_type, file_name)
    result = await file_result(stored)
    async with transaction() as session:
        await record_file(session, stored, task_id)
    return msgspec.to_builtins(ExportResult(**msgspec.structs.asdict(result), rows=rows))
