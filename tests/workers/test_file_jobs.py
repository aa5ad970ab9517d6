"""File jobs run in-process against the real database and S3: redelivery and resume rules."""

from __future__ import annotations

import io
import uuid

import msgspec

from app.db import transaction
from app.reports.jobs import generate_report
from app.storage import record_file, store
from app.tasks.context import TaskContext
from app.transfer.jobs import run_import
from tests.factories import count_rows, create_batch, event_types
from tests.file_factories import RU_HEADER, ru_row, xlsx_bytes


async def _quiet(current: int, total: int, message: str) -> None:
    """Progress goes nowhere: these jobs have no tasks row."""


async def test_a_stored_report_is_not_announced_twice(client):
    batch = await create_batch(client)
    task_id = uuid.uuid4()
    first = await generate_report(task_id, batch["id"], "excel", "a@b.example", _quiet)
    again = await generate_report(task_id, batch["id"], "excel", "a@b.example", _quiet)
    assert (again["file_name"], again["size"]) == (first["file_name"], first["size"])
    assert (await event_types()).count("report_generated") == 1
    assert await count_rows("files", "kind = 'report'") == 1
    assert await count_rows("tasks", "kind = 'send_notification'") == 1  # mailed once


async def test_an_import_resumes_after_its_last_committed_chunk(client):
    data = xlsx_bytes([RU_HEADER, *[ru_row(n) for n in range(1, 1501)]])
    key = f"uploads/{uuid.uuid4()}/source.xlsx"
    stored = await store("import", key, io.BytesIO(data), "application/octet-stream")
    async with transaction() as session:
        await record_file(session, stored, None)
    # The first 1,000 rows were committed by an earlier try (no tasks row: progress is moot).
    ctx = TaskContext(
        uuid.uuid4(),
        {"bucket": stored.bucket, "key": key, "file_name": "a.xlsx", "format": "xlsx"},
        {"processed": 1000, "created": 1000, "updated": 0, "skipped": 0, "errors": []},
        attempt=2,
    )
    result = await run_import(ctx)
    assert result == {"total": 1500, "created": 1500, "updated": 0, "skipped": 0, "errors": []}
    assert await count_rows("batches") == 500  # rows 1..1000 were the earlier try's
    assert await count_rows("batches", "batch_number > 1000") == 500
    assert ctx.checkpoint["completed"] is True
    assert (await event_types()).count("import_completed") == 1

    # Redelivered after completion (the checkpoint says so): nothing is done again.
    assert msgspec.to_builtins(await run_import(ctx))["created"] == 1500
    assert (await event_types()).count("import_completed") == 1
