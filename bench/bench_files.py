"""File-job figures: reports, import and export through real workers, S3 and PostgreSQL.

* xlsx report of a batch with 100,000 products (target < 5 s),
* PDF report of a batch with 10,000 products,
* import of a 50,000-row xlsx,
* export of 100,000 batches (xlsx and csv),

each on a fresh heavy worker, with the peak RSS (VmHWM) of that worker's processes, start-up
included (constant memory: < 300 MB).
Runs in its own database and RabbitMQ vhost (BENCH_DATABASE_NAME / BENCH_RABBITMQ_VHOST,
default `pc_bench_files`) against a local moto S3 (or TEST_S3_ENDPOINT_URL), so a
developer's data is never touched. `run()` prints the figures and returns them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DATABASE = os.environ.get("BENCH_DATABASE_NAME", "pc_bench_files")
VHOST = os.environ.get("BENCH_RABBITMQ_VHOST", "pc_bench_files")
REPORT_PRODUCTS = 100_000
PDF_PRODUCTS = 10_000
IMPORT_ROWS = 50_000
EXPORT_BATCHES = 100_000


def _descendants(pid: int) -> list[int]:
    """pid and every process below it (the dramatiq CLI and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _peak_mb(pids: list[int]) -> float:
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return round(max(peaks, default=0.0), 1)


async def _seed() -> dict[str, int]:
    from sqlalchemy import text

    from app.db import transaction

    async with transaction() as session:
        await session.execute(
            text("INSERT INTO work_centers (identifier, name) VALUES ('WC-1', 'Цех розлива №1')")
        )
        await session.execute(
            text(
                """
                INSERT INTO batches (is_closed, task_description, work_center_id, shift, team,
                    batch_number, batch_date, nomenclature, ekn_code, shift_start, shift_end)
                SELECT g % 3 = 0, 'Задание на смену ' || g, 1, (g % 3 + 1)::text,
                    'Бригада №' || (g % 7 + 1), g, DATE '2025-01-01' + (g / 1000),
                    'Молоко 3,2% «Партия ' || g || '»', 'EKN-' || g,
                    TIMESTAMPTZ '2025-01-01 08:00+03' + (g / 1000) * INTERVAL '1 day',
                    TIMESTAMPTZ '2025-01-01 20:00+03' + (g / 1000) * INTERVAL '1 day'
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": EXPORT_BATCHES},
        )
        for batch_id, count, prefix in ((1, REPORT_PRODUCTS, "R"), (2, PDF_PRODUCTS, "P")):
            await session.execute(
                text(
                    """
                    INSERT INTO products (unique_code, batch_id, is_aggregated, aggregated_at)
                    SELECT :prefix || lpad(g::text, 9, '0'), :batch, g % 10 < 7,
                        CASE WHEN g % 10 < 7 THEN TIMESTAMPTZ '2025-01-01 08:00+03'
                            + (g % 720) * INTERVAL '1 minute' END
                    FROM generate_series(1, :n) AS g
                    """
                ),
                {"prefix": prefix, "batch": batch_id, "n": count},
            )
    return {"report_batch": 1, "pdf_batch": 2}


def _import_workbook(path: str) -> None:
    import xlsxwriter

    from tests.factories import shift_task_ru

    header = list(shift_task_ru().keys())
    workbook = xlsxwriter.Workbook(path, {"constant_memory": True})
    sheet = workbook.add_worksheet()
    sheet.write_row(0, 0, header)
    for n in range(1, IMPORT_ROWS + 1):
        # Half new batches, half overwrites of seeded ones (the 1C re-send rule).
        number = EXPORT_BATCHES + n if n % 2 else n
        date = (dt.date(2025, 1, 1) + dt.timedelta(days=number // 1000)).isoformat()
        sheet.write_row(n, 0, list(shift_task_ru(number, date).values()))
    workbook.close()


async def _run_task(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one job on a fresh heavy worker; its duration and the worker's peak RSS."""
    from sqlalchemy import text

    from app.db import transaction
    from app.outbox import enqueue_task
    from app.wiring import outbox_relay
    from tests.support import WorkerGroup

    workers = await asyncio.to_thread(WorkerGroup(["heavy"]).start)
    try:
        async with transaction() as session:
            task = await enqueue_task(session, kind, params)
        relay = outbox_relay()
        await relay.drain()
        relay.publisher.close()
        while True:
            async with transaction() as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT status, result, error, "
                            "EXTRACT(EPOCH FROM finished_at - started_at) AS seconds "
                            "FROM tasks WHERE id = :id"
                        ),
                        {"id": task.id},
                    )
                ).one()
            if row.status in ("SUCCESS", "FAILURE", "CANCELLED"):
                break
            await asyncio.sleep(0.2)
        assert workers.process is not None
        peak = _peak_mb(_descendants(workers.process.pid))
    finally:
        await asyncio.to_thread(workers.stop)
    if row.status != "SUCCESS":
        raise RuntimeError(f"{kind} ended {row.status}: {row.error}")
    figures = {"seconds": round(float(row.seconds), 2), "worker_peak_rss_mb": peak}
    result = row.result or {}
    figures.update(
        {k: result[k] for k in ("size", "rows", "total", "created", "updated") if k in result}
    )
    return figures


async def _bench() -> dict[str, Any]:
    from app.db import transaction
    from app.storage import XLSX_TYPE, ensure_buckets, record_file, store

    await ensure_buckets()
    started = time.perf_counter()
    batches = await _seed()
    figures: dict[str, Any] = {"seed_seconds": round(time.perf_counter() - started, 2)}
    figures["report_xlsx_100k_products"] = await _run_task(
        "generate_report", {"batch_id": batches["report_batch"], "format": "excel"}
    )
    figures["report_pdf_10k_products"] = await _run_task(
        "generate_report", {"batch_id": batches["pdf_batch"], "format": "pdf"}
    )
    figures["export_xlsx_100k_batches"] = await _run_task(
        "export_batches", {"format": "excel", "filters": {}}
    )
    figures["export_csv_100k_batches"] = await _run_task(
        "export_batches", {"format": "csv", "filters": {}}
    )
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "import.xlsx")
        await asyncio.to_thread(_import_workbook, path)
        key = f"uploads/{uuid.uuid4()}/source.xlsx"
        stored = await store("import", key, path, XLSX_TYPE)
    async with transaction() as session:
        await record_file(session, stored, None)
    figures["import_xlsx_50k_rows"] = await _run_task(
        "import_batches",
        {"bucket": stored.bucket, "key": key, "file_name": "import.xlsx", "format": "xlsx"},
    )
    return figures


def run() -> dict[str, Any]:
    os.environ["TEST_DATABASE_NAME"] = DATABASE
    os.environ["TEST_RABBITMQ_VHOST"] = VHOST
    from tests import support

    os.environ.update(support.test_environment())
    os.environ.update(support.local_s3_environment())
    os.environ["LOG_LEVEL"] = "WARNING"
    support.prepare_database()
    support.prepare_vhost()
    figures = asyncio.run(_bench())
    print(json.dumps({"files": figures}, indent=2, ensure_ascii=False))
    return figures


if __name__ == "__main__":
    run()
