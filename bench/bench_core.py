"""Core figures: 1C ingest, bulk products, aggregate-async end to end, enqueue latency."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from typing import Any

import asyncpg
import msgspec

from bench.floors import aggregate_floor, ingest_floor
from bench.harness import Stack, support, wait_task
from bench.targets import sizes

JSON = {"content-type": "application/json"}


def _shift_tasks(count: int, start: int) -> list[dict[str, Any]]:
    day = dt.date(2025, 1, 1)
    return [
        {
            "СтатусЗакрытия": False,
            "ПредставлениеЗаданияНаСмену": f"Задание {n}",
            "РабочийЦентр": f"Линия {n % 7}",
            "Смена": str(1 + n % 3),
            "Бригада": f"Бригада №{n % 5}",
            "НомерПартии": n,
            "ДатаПартии": day.isoformat(),
            "Номенклатура": "Изделие",
            "КодЕКН": "456678",
            "ИдентификаторРЦ": f"WC{n % 7}",
            "ДатаВремяНачалаСмены": "2025-01-01T08:00:00+05:00",
            "ДатаВремяОкончанияСмены": "2025-01-01T20:00:00+05:00",
        }
        for n in range(start, start + count)
    ]


def run() -> dict[str, Any]:
    size = sizes()
    count, batches = size["codes"], size["ingest_batches"]
    dsn = support.TEST_DATABASE_URL
    figures: dict[str, Any] = {"codes": count, "ingest_batches": batches}
    with Stack() as stack, stack.client() as client:
        # warm-up: connections, prepared statements, queue declarations; two whole feeds, as
        # a fresh database's first inserts set off autovacuum's ANALYZE of a tiny table.
        client.post("/api/v1/batches", json=_shift_tasks(10, 900_000)).raise_for_status()
        for warm in range(2):
            warm_up = _shift_tasks(batches, 3_000_000 + warm * batches)
            client.post("/api/v1/batches", json=warm_up).raise_for_status()

        # Seven feeds of fresh batches, each followed by its floor (the same rows through
        # PostgreSQL alone): medians of both, so one slow moment of a shared machine does not
        # decide the ratio.
        print(f"   core: 1C ingest of {batches} batches, 7 runs and their floors", flush=True)
        ingest_runs, floor_runs = [], []
        batch_id = 0
        for run in range(7):
            # Encoded before the clock starts: 1C's own JSON encoding is not the service's
            # time (httpx's json= alone takes ~3 ms for this feed).
            feed = msgspec.json.encode(_shift_tasks(batches, 1 + run * batches))
            started = time.perf_counter()
            response = client.post("/api/v1/batches", content=feed, headers=JSON)
            ingest_runs.append(round(time.perf_counter() - started, 4))
            assert response.status_code == 201, response.text
            batch_id = batch_id or response.json()[0]["id"]
            floor_feed = _shift_tasks(batches, 2_000_000 + run * batches)
            warm_up = _shift_tasks(10, 2_900_000 + run * 10)
            floor_runs.append(round(asyncio.run(ingest_floor(dsn, floor_feed, warm_up)), 4))
        figures["ingest_1000_batches_s"] = statistics.median(ingest_runs)
        figures["ingest_1000_batches_runs_s"] = ingest_runs
        figures["ingest_floor_s"] = statistics.median(floor_runs)
        figures["ingest_floor_runs_s"] = floor_runs

        # Three runs of fresh codes (the client's JSON encoding included); the median is the
        # figure, the runs show the spread.
        print(f"   core: bulk add of {count} codes, 3 runs", flush=True)
        runs = []
        for run in range(3):
            codes = [f"BENCH-{run}-{i:07d}" for i in range(count)]
            started = time.perf_counter()
            response = client.post(
                "/api/v1/products", json=[{"unique_code": c, "batch_id": batch_id} for c in codes]
            )
            runs.append(round(time.perf_counter() - started, 3))
            assert response.json()["created"] == count, response.text
        figures["bulk_add_100k_products_s"] = statistics.median(runs)
        figures["bulk_add_100k_products_runs_s"] = runs
        codes = [f"BENCH-0-{i:07d}" for i in range(count)]

        print(f"   core: aggregate-async of {count} codes, and its floor", flush=True)
        figures["aggregate_floor_s"] = round(
            asyncio.run(aggregate_floor(dsn, batch_id, [f"BENCH-1-{i:07d}" for i in range(count)])),
            3,
        )
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/batches/{batch_id}/aggregate-async", json={"unique_codes": codes}
        )
        task = wait_task(client, response.json()["task_id"])
        figures["aggregate_async_100k_end_to_end_s"] = round(time.perf_counter() - started, 3)
        assert task["result"]["aggregated"] == count, task

        print("   core: enqueue -> actor start latency", flush=True)
        # enqueue -> actor start: created_at (enqueue transaction) to started_at (claim).
        small = [f"LAT-{i}" for i in range(60)]
        client.post(
            "/api/v1/products", json=[{"unique_code": c, "batch_id": batch_id} for c in small]
        ).raise_for_status()
        latencies = []
        for code in small:
            task_id = client.post(
                f"/api/v1/batches/{batch_id}/aggregate-async", json={"unique_codes": [code]}
            ).json()["task_id"]
            task = wait_task(client, task_id)
            created = dt.datetime.fromisoformat(task["created_at"])
            begun = dt.datetime.fromisoformat(task["started_at"])
            latencies.append((begun - created).total_seconds() * 1000)
        latencies = latencies[10:]  # drop warm-up
        figures["enqueue_to_start_p50_ms"] = round(statistics.median(latencies), 1)
        figures["enqueue_to_start_p95_ms"] = round(statistics.quantiles(latencies, n=20)[18], 1)
        figures.update(asyncio.run(_latency_breakdown()))
    return figures


async def _latency_breakdown() -> dict[str, float]:
    """Split enqueue -> start into commit -> published (relay) and published -> claimed (broker
    + worker), from the timestamps PostgreSQL recorded."""
    connection = await asyncpg.connect(support.TEST_DATABASE_URL.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            """
            SELECT EXTRACT(EPOCH FROM o.published_at - t.created_at) * 1000 AS relay_ms,
                   EXTRACT(EPOCH FROM t.started_at - o.published_at) * 1000 AS consume_ms
            FROM tasks t JOIN outbox o ON o.payload->>'message_id' = t.id::text
            WHERE t.kind = 'aggregate_products' AND t.progress_total = 1
            ORDER BY t.created_at OFFSET 10
            """
        )
    finally:
        await connection.close()
    return {
        "relay_commit_to_published_p50_ms": round(
            statistics.median(float(r["relay_ms"]) for r in rows), 1
        ),
        "published_to_actor_start_p50_ms": round(
            statistics.median(float(r["consume_ms"]) for r in rows), 1
        ),
    }
